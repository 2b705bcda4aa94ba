-- +goose Up
-- disabled_at is when a key was disabled, in Unix microseconds (NULL:
-- enabled), as in PostgreSQL's 00008_key_disabled.
ALTER TABLE api_keys ADD COLUMN disabled_at INTEGER;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN disabled_at;
