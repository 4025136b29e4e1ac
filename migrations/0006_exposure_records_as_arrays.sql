-- 0006_exposure_records_as_arrays: a chunk's records are written as
-- arrays, their members by place, no longer as objects with short names:
-- every byte of a record is copied some five times on its way to disk (the
-- WAL, its checksum, the checkpoint's read and write), and the names were
-- a quarter of a typical record; the time, as text, another tenth.
--
-- A record is [request_id, at, user_id, version, arm, status, latency_ms,
-- prompt_tokens, completion_tokens, total_tokens, variables, stream,
-- output, key, prompt, label, experiment, model, backend, cache]:
-- places 0-10 always, null where unknown; the later ones only up to the
-- last one set (stream is 1 when streamed); "at" is the time in ms since
-- the epoch (the view writes it as before: ISO-8601 UTC with
-- milliseconds; a chunk's first_at and last_at stay text); "variables"
-- is the request's JSON object, or a string holding JSON text the writer
-- could not vouch for. Places 13-19 are left null (or out) when the chunk's `common`
-- object holds them, as before.
--
-- Chunks written before keep their objects (migration 0005's form): the
-- view reads each record by its JSON type, so old and new chunks read
-- alike, and nothing is rewritten.

DROP VIEW exposures;

CREATE VIEW exposures AS
SELECT c.id * 1024 + j.key AS id,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[0]' ELSE '$.r' END) AS request_id,
       CASE j.type WHEN 'array'
           THEN strftime('%Y-%m-%dT%H:%M:%fZ',
                         json_extract(j.value, '$[1]') / 1000.0, 'unixepoch')
           ELSE json_extract(j.value, '$.t') END AS at,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[13]' ELSE '$.k' END),
                json_extract(c.common, '$.k')) AS key_name,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[2]' ELSE '$.u' END) AS user_id,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[14]' ELSE '$.p' END),
                json_extract(c.common, '$.p')) AS prompt,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[3]' ELSE '$.v' END) AS version,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[15]' ELSE '$.l' END),
                json_extract(c.common, '$.l')) AS label,
       c.experiment_id AS experiment_id,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[16]' ELSE '$.x' END),
                json_extract(c.common, '$.x')) AS experiment,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[4]' ELSE '$.a' END) AS arm,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[17]' ELSE '$.m' END),
                json_extract(c.common, '$.m')) AS model,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[18]' ELSE '$.b' END),
                json_extract(c.common, '$.b')) AS backend,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[5]' ELSE '$.s' END) AS status,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[11]' ELSE '$.st' END), 0) AS stream,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[6]' ELSE '$.ms' END) AS latency_ms,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[7]' ELSE '$.pt' END) AS prompt_tokens,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[8]' ELSE '$.ct' END) AS completion_tokens,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[9]' ELSE '$.tt' END) AS total_tokens,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[19]' ELSE '$.c' END),
                json_extract(c.common, '$.c')) AS cache,
       coalesce(json_extract(j.value, CASE j.type WHEN 'array' THEN '$[10]' ELSE '$.vars' END), '{}') AS variables,
       json_extract(j.value, CASE j.type WHEN 'array' THEN '$[12]' ELSE '$.o' END) AS output
FROM exposure_chunks c, json_each(c.records) j;
