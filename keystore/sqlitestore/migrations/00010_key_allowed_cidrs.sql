-- +goose Up
-- The networks a key may be used from, as a JSON array of CIDR strings (NULL:
-- any network), as in PostgreSQL's 00010_key_allowed_cidrs.
ALTER TABLE api_keys ADD COLUMN allowed_cidrs TEXT;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN allowed_cidrs;
