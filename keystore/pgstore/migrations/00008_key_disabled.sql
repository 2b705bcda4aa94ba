-- +goose Up
-- disabled_at is when a key was disabled (NULL: enabled). A disabled key is
-- refused until it is enabled again; unlike a revocation, this is reversible.
ALTER TABLE api_keys ADD COLUMN disabled_at timestamptz;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN disabled_at;
