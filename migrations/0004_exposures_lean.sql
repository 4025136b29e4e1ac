-- 0004_exposures_lean: exposures are appended at request rate; an index on
-- the random request ids costs a random B-tree page per insert as the
-- table grows. Feedback is joined through feedback's own primary key
-- (request_id, event), so exposures need no index on request_id.
DROP INDEX exposures_request;
