-- +goose Up
-- The networks a key may be used from (NULL: any network), canonical as
-- odin writes them: masked, IPv4 before IPv6, sorted, no duplicates.
ALTER TABLE api_keys ADD COLUMN allowed_cidrs cidr[];
ALTER TABLE api_keys ADD CONSTRAINT api_keys_allowed_cidrs_count
	CHECK (allowed_cidrs IS NULL OR cardinality(allowed_cidrs) BETWEEN 1 AND 100);

-- +goose Down
ALTER TABLE api_keys DROP CONSTRAINT api_keys_allowed_cidrs_count;
ALTER TABLE api_keys DROP COLUMN allowed_cidrs;
