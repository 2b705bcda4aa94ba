-- +goose Up
-- A key's own rate limit, used instead of its tier's (both NULL: the tier's),
-- in the rate limiter's units: a sustained rate in requests per second and a
-- burst. Both are set or neither.
ALTER TABLE api_keys ADD COLUMN rate_limit_rate double precision;
ALTER TABLE api_keys ADD COLUMN rate_limit_burst integer;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_rate_limit_both
	CHECK ((rate_limit_rate IS NULL) = (rate_limit_burst IS NULL));

-- +goose Down
ALTER TABLE api_keys DROP CONSTRAINT api_keys_rate_limit_both;
ALTER TABLE api_keys DROP COLUMN rate_limit_burst;
ALTER TABLE api_keys DROP COLUMN rate_limit_rate;
