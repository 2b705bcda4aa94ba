-- +goose Up
-- A key's own rate limit, in requests per second and a burst (both NULL: its
-- tier's), as in PostgreSQL's 00009_key_rate_limit.
ALTER TABLE api_keys ADD COLUMN rate_limit_rate REAL;
ALTER TABLE api_keys ADD COLUMN rate_limit_burst INTEGER;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN rate_limit_burst;
ALTER TABLE api_keys DROP COLUMN rate_limit_rate;
