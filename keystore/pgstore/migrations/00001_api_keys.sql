-- +goose Up
-- api_keys holds every issued key. Only the SHA-256 of the key is stored;
-- the plaintext is shown once at creation and never again.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY,               -- public id, key_<base62>
    user_id      text        NOT NULL DEFAULT '',       -- owning or creating user
    org_id       text        NOT NULL DEFAULT '',       -- owning organisation, if any
    name         text        NOT NULL,
    key_hash     bytea       NOT NULL,
    hint         text        NOT NULL,                  -- odin_sk_AbCd…wxyz
    scopes       text[]      NOT NULL DEFAULT '{}',
    tier         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_owner_present CHECK (user_id <> '' OR org_id <> ''),
    CONSTRAINT api_keys_hash_len CHECK (octet_length(key_hash) = 32)
);

-- Every check that misses the caches looks a key up by its hash.
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);

-- Listing a tenant's keys, newest first, with keyset pagination.
CREATE INDEX api_keys_owner_created ON api_keys (org_id, user_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE api_keys;
