-- 0003_exposures: what the gateway served (one row per request that used a
-- registry prompt) and the business outcomes attached to it later.
-- Written by the gateway's exposure writer, read by `promptctl samples
-- export`; never updated. Times are ISO-8601 UTC with milliseconds.

CREATE TABLE exposures (
    id                INTEGER PRIMARY KEY,
    request_id        TEXT NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    at                TEXT NOT NULL,
    key_name          TEXT,
    user_id           TEXT,
    prompt            TEXT NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    label             TEXT,
    experiment_id     INTEGER,
    experiment        TEXT,
    arm               INTEGER,
    model             TEXT,
    backend           TEXT,
    status            INTEGER NOT NULL,
    stream            INTEGER NOT NULL DEFAULT 0,
    latency_ms        REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    cache             TEXT,
    variables         TEXT NOT NULL DEFAULT '{}',
    output            TEXT
);
CREATE INDEX exposures_request ON exposures(request_id);
CREATE INDEX exposures_experiment ON exposures(experiment_id, at);

-- One outcome per (request, event): a retried POST /v1/feedback adds nothing.
CREATE TABLE feedback (
    request_id  TEXT NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    event       TEXT NOT NULL CHECK (length(event) BETWEEN 1 AND 64),
    value       REAL NOT NULL DEFAULT 1,
    at          TEXT NOT NULL,
    PRIMARY KEY (request_id, event)
);
