-- 0005_exposure_chunks: exposures are appended at request rate, and a
-- table row per exposure cost the gateway's writer thread ~20,000
-- instructions a record (~11,000 even with its INSERT prepared once and
-- 32 rows to an execution: bind 21 columns, build the record, insert it
-- and its index entry, split pages) on the core that serves requests.
-- They are now stored as chunks: one row holds up to 256 exposures of one
-- experiment (or of none) as a JSON array of objects, written by one
-- INSERT. The view `exposures` keeps the old columns, one row per
-- exposure, for SQL readers; its id is the chunk's id * 1024 + the
-- record's place, so one experiment's exposures keep the order they were
-- written in, and a writer batch that mixed experiments shows them
-- grouped. `promptctl samples export` reads the chunks of one experiment
-- through the index on experiment_id (a chunk's last_at skips old chunks
-- for --since).
-- Never updated; times are ISO-8601 UTC with milliseconds.
--
-- A record has short member names (each byte of it is copied about five
-- times on its way to disk): {"r": request_id, "t": at, "k": key_name,
-- "u": user_id, "p": prompt, "v": version, "l": label, "x": experiment,
-- "a": arm, "m": model, "b": backend, "s": status, "st": true when
-- streamed, "ms": latency_ms, "pt"/"ct"/"tt": prompt/completion/total
-- tokens, "c": cache, "vars": variables, "o": output}; unknown members are
-- left out; experiment_id is the chunk's; "vars" is the request's JSON
-- object, or a string holding JSON text when the writer could not vouch
-- for it. String members that every record of a chunk shares ("k", "p",
-- "l", "x", "m", "b", "c": under steady traffic all of them) are written
-- once, in the chunk's `common` object, and left out of the records. The
-- view below names the members and fills in the common ones.

CREATE TABLE exposure_chunks (
    id            INTEGER PRIMARY KEY,
    experiment_id INTEGER,
    first_at      TEXT NOT NULL,
    last_at       TEXT NOT NULL,
    n             INTEGER NOT NULL CHECK (n BETWEEN 1 AND 1024),
    common        TEXT,
    records       TEXT NOT NULL
);
CREATE INDEX exposure_chunks_experiment ON exposure_chunks(experiment_id)
    WHERE experiment_id IS NOT NULL;

-- the rows written before: one chunk each, in their order
INSERT INTO exposure_chunks (experiment_id, first_at, last_at, n, records)
SELECT experiment_id, at, at, 1, json_array(json_object(
    'r', request_id, 't', at, 'k', key_name, 'u', user_id, 'p', prompt,
    'v', version, 'l', label, 'x', experiment, 'a', arm, 'm', model,
    'b', backend, 's', status, 'st', json(CASE WHEN stream THEN 'true' END),
    'ms', latency_ms, 'pt', prompt_tokens, 'ct', completion_tokens,
    'tt', total_tokens, 'c', cache,
    'vars', CASE WHEN json_valid(variables) THEN json(variables)
                 ELSE variables END,
    'o', output))
FROM exposures ORDER BY id;
DROP TABLE exposures;

CREATE VIEW exposures AS
SELECT c.id * 1024 + j.key AS id,
       json_extract(j.value, '$.r') AS request_id,
       json_extract(j.value, '$.t') AS at,
       coalesce(json_extract(j.value, '$.k'),
                json_extract(c.common, '$.k')) AS key_name,
       json_extract(j.value, '$.u') AS user_id,
       coalesce(json_extract(j.value, '$.p'),
                json_extract(c.common, '$.p')) AS prompt,
       json_extract(j.value, '$.v') AS version,
       coalesce(json_extract(j.value, '$.l'),
                json_extract(c.common, '$.l')) AS label,
       c.experiment_id AS experiment_id,
       coalesce(json_extract(j.value, '$.x'),
                json_extract(c.common, '$.x')) AS experiment,
       json_extract(j.value, '$.a') AS arm,
       coalesce(json_extract(j.value, '$.m'),
                json_extract(c.common, '$.m')) AS model,
       coalesce(json_extract(j.value, '$.b'),
                json_extract(c.common, '$.b')) AS backend,
       json_extract(j.value, '$.s') AS status,
       coalesce(json_extract(j.value, '$.st'), 0) AS stream,
       json_extract(j.value, '$.ms') AS latency_ms,
       json_extract(j.value, '$.pt') AS prompt_tokens,
       json_extract(j.value, '$.ct') AS completion_tokens,
       json_extract(j.value, '$.tt') AS total_tokens,
       coalesce(json_extract(j.value, '$.c'),
                json_extract(c.common, '$.c')) AS cache,
       coalesce(json_extract(j.value, '$.vars'), '{}') AS variables,
       json_extract(j.value, '$.o') AS output
FROM exposure_chunks c, json_each(c.records) j;
