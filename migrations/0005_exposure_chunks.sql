-- 0005_exposure_chunks: exposures are appended at request rate, and a
-- table row per exposure cost the gateway's writer thread ~11,000
-- instructions a record (bind 21 columns, build the record, insert it and
-- its index entry, split pages) on the core that serves requests. They are
-- now stored as chunks: one row holds up to 256 exposures of one
-- experiment (or of none) as a JSON array of objects, written by one
-- INSERT. The view `exposures` keeps the old columns, one row per
-- exposure, in the order they were written, for SQL readers; `promptctl
-- samples export` reads the chunks of one experiment through the index on
-- experiment_id (a chunk's last_at skips old chunks for --since).
-- Never updated; times are ISO-8601 UTC with milliseconds.
--
-- A record: {"request_id", "at", "key", "user", "prompt", "version",
-- "label", "experiment_id", "experiment", "arm", "model", "backend",
-- "status", "stream", "latency_ms", "prompt_tokens", "completion_tokens",
-- "total_tokens", "cache", "variables", "output"}; unknown members are
-- left out; "variables" is the request's JSON object, or a string holding
-- JSON text when the writer could not vouch for it.

CREATE TABLE exposure_chunks (
    id            INTEGER PRIMARY KEY,
    experiment_id INTEGER,
    first_at      TEXT NOT NULL,
    last_at       TEXT NOT NULL,
    n             INTEGER NOT NULL CHECK (n BETWEEN 1 AND 1024),
    records       TEXT NOT NULL
);
CREATE INDEX exposure_chunks_experiment ON exposure_chunks(experiment_id)
    WHERE experiment_id IS NOT NULL;

-- the rows written before: one chunk each, in their order
INSERT INTO exposure_chunks (experiment_id, first_at, last_at, n, records)
SELECT experiment_id, at, at, 1, json_array(json_object(
    'request_id', request_id, 'at', at, 'key', key_name, 'user', user_id,
    'prompt', prompt, 'version', version, 'label', label,
    'experiment_id', experiment_id, 'experiment', experiment, 'arm', arm,
    'model', model, 'backend', backend, 'status', status,
    'stream', json(CASE WHEN stream THEN 'true' ELSE 'false' END),
    'latency_ms', latency_ms, 'prompt_tokens', prompt_tokens,
    'completion_tokens', completion_tokens, 'total_tokens', total_tokens,
    'cache', cache,
    'variables', CASE WHEN json_valid(variables) THEN json(variables)
                      ELSE variables END,
    'output', output))
FROM exposures ORDER BY id;
DROP TABLE exposures;

CREATE VIEW exposures AS
SELECT c.id * 1024 + j.key AS id,
       json_extract(j.value, '$.request_id') AS request_id,
       json_extract(j.value, '$.at') AS at,
       json_extract(j.value, '$.key') AS key_name,
       json_extract(j.value, '$.user') AS user_id,
       json_extract(j.value, '$.prompt') AS prompt,
       json_extract(j.value, '$.version') AS version,
       json_extract(j.value, '$.label') AS label,
       json_extract(j.value, '$.experiment_id') AS experiment_id,
       json_extract(j.value, '$.experiment') AS experiment,
       json_extract(j.value, '$.arm') AS arm,
       json_extract(j.value, '$.model') AS model,
       json_extract(j.value, '$.backend') AS backend,
       json_extract(j.value, '$.status') AS status,
       json_extract(j.value, '$.stream') AS stream,
       json_extract(j.value, '$.latency_ms') AS latency_ms,
       json_extract(j.value, '$.prompt_tokens') AS prompt_tokens,
       json_extract(j.value, '$.completion_tokens') AS completion_tokens,
       json_extract(j.value, '$.total_tokens') AS total_tokens,
       json_extract(j.value, '$.cache') AS cache,
       coalesce(json_extract(j.value, '$.variables'), '{}') AS variables,
       json_extract(j.value, '$.output') AS output
FROM exposure_chunks c, json_each(c.records) j;
