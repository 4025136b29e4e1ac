-- 0002_eval_runs: evaluator runs recorded against prompt versions.

CREATE TABLE eval_runs (
    id          INTEGER PRIMARY KEY,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    prompt      TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    source      TEXT NOT NULL DEFAULT '',
    summary     TEXT NOT NULL CHECK (json_valid(summary))
);
CREATE INDEX eval_runs_prompt ON eval_runs(prompt, version);
