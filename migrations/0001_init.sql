-- 0001_init: prompts, immutable versions, labels with history, experiments.
-- Applied by the registry library inside one transaction; never edit once
-- released (the checksum is recorded): add a new migration instead.

CREATE TABLE prompts (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE
                CHECK (length(name) BETWEEN 1 AND 128
                       AND name GLOB '[a-z0-9]*'
                       AND name NOT GLOB '*[^a-z0-9_.-]*'),
    description TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 1024),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE versions (
    id          INTEGER PRIMARY KEY,
    prompt_id   INTEGER NOT NULL REFERENCES prompts(id),
    version     INTEGER NOT NULL CHECK (version >= 1),
    messages    TEXT NOT NULL CHECK (json_valid(messages)),
    params      TEXT NOT NULL CHECK (json_valid(params)),
    variables   TEXT NOT NULL CHECK (json_valid(variables)),
    hash        TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    author      TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (prompt_id, version)
);

-- Versions are immutable: the database itself refuses changes.
CREATE TRIGGER versions_immutable_update BEFORE UPDATE ON versions
BEGIN
    SELECT RAISE(ABORT, 'versions are immutable');
END;
CREATE TRIGGER versions_immutable_delete BEFORE DELETE ON versions
BEGIN
    SELECT RAISE(ABORT, 'versions are immutable');
END;
-- Versions are numbered 1, 2, ... without gaps.
CREATE TRIGGER versions_sequential BEFORE INSERT ON versions
WHEN NEW.version <> (SELECT coalesce(max(version), 0) + 1
                     FROM versions WHERE prompt_id = NEW.prompt_id)
BEGIN
    SELECT RAISE(ABORT, 'versions must be numbered sequentially');
END;

CREATE TABLE labels (
    prompt_id   INTEGER NOT NULL REFERENCES prompts(id),
    label       TEXT NOT NULL
                CHECK (length(label) BETWEEN 1 AND 64
                       AND label NOT GLOB '*[^a-z0-9_-]*'
                       AND label <> 'latest'),
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_by  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (prompt_id, label),
    FOREIGN KEY (prompt_id, version) REFERENCES versions(prompt_id, version)
);

-- Every label move; rollback follows this chain. undone = 1 marks a move
-- that a later rollback took back.
CREATE TABLE label_history (
    id           INTEGER PRIMARY KEY,
    prompt_id    INTEGER NOT NULL REFERENCES prompts(id),
    label        TEXT NOT NULL,
    from_version INTEGER,
    to_version   INTEGER NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('set', 'rollback', 'import')),
    undone       INTEGER NOT NULL DEFAULT 0,
    actor        TEXT NOT NULL DEFAULT '',
    at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX label_history_prompt ON label_history(prompt_id, label, id);

CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    prompt_id   INTEGER NOT NULL REFERENCES prompts(id),
    label       TEXT NOT NULL,
    salt        TEXT NOT NULL CHECK (length(salt) BETWEEN 1 AND 64),
    status      TEXT NOT NULL CHECK (status IN ('running', 'stopped')),
    started_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    stopped_at  TEXT,
    started_by  TEXT NOT NULL DEFAULT ''
);
-- At most one running experiment per label.
CREATE UNIQUE INDEX experiments_one_running ON experiments(prompt_id, label)
    WHERE status = 'running';

CREATE TABLE experiment_arms (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    prompt_id     INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    weight        INTEGER NOT NULL CHECK (weight BETWEEN 1 AND 100),
    PRIMARY KEY (experiment_id, version),
    FOREIGN KEY (prompt_id, version) REFERENCES versions(prompt_id, version)
);
CREATE TRIGGER experiment_arms_immutable BEFORE UPDATE ON experiment_arms
BEGIN
    SELECT RAISE(ABORT, 'experiment arms are immutable');
END;
