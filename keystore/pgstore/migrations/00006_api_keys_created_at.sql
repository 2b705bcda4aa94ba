-- +goose Up
-- A replica's key filter reads the keys created in the last minute or so
-- before it refuses a key it does not hold (KeyHashes with a since).
CREATE INDEX IF NOT EXISTS api_keys_created_at ON api_keys (created_at);

-- +goose Down
DROP INDEX IF EXISTS api_keys_created_at;
