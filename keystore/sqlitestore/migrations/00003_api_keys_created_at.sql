-- +goose Up
-- As PostgreSQL's: the key filter reads the keys created recently.
CREATE INDEX IF NOT EXISTS api_keys_created_at ON api_keys (created_at);

-- +goose Down
DROP INDEX IF EXISTS api_keys_created_at;
