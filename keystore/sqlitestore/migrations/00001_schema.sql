-- +goose Up
-- The embedded store's schema mirrors PostgreSQL's (keystore/pgstore/
-- migrations) table for table. Every time is an INTEGER of Unix
-- microseconds in UTC: the precision of timestamptz, compared and ordered
-- exactly as numbers. Scopes and audit details are JSON text. A later change
-- to the PostgreSQL schema comes here as a new numbered file.

-- api_keys holds every issued key, by the SHA-256 of the key only.
CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY,            -- public id, key_<base62>
    user_id      TEXT    NOT NULL DEFAULT '',    -- owning or creating user
    org_id       TEXT    NOT NULL DEFAULT '',    -- owning organisation, if any
    name         TEXT    NOT NULL,
    key_hash     BLOB    NOT NULL,
    hint         TEXT    NOT NULL,               -- odin_sk_AbCd…wxyz
    scopes       TEXT    NOT NULL DEFAULT '[]',  -- JSON array of strings
    tier         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    CONSTRAINT api_keys_owner_present CHECK (user_id <> '' OR org_id <> ''),
    CONSTRAINT api_keys_hash_len CHECK (length(key_hash) = 32),
    CONSTRAINT api_keys_scopes_array CHECK (json_type(scopes) = 'array')
) STRICT;

-- Every check that misses the caches looks a key up by its hash.
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);

-- Listing a tenant's keys, newest first, with keyset pagination.
CREATE INDEX api_keys_owner_created ON api_keys (org_id, user_id, created_at DESC, id DESC);

-- revoked_sessions lists logged-out sessions: every token of a listed
-- session is refused until expires_at, after which the row is pruned.
CREATE TABLE revoked_sessions (
    session_id TEXT    PRIMARY KEY,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    reason     TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX revoked_sessions_revoked_at ON revoked_sessions (revoked_at);
CREATE INDEX revoked_sessions_expires_at ON revoked_sessions (expires_at);

-- audit_events records every change to keys and sessions. AUTOINCREMENT
-- keeps ids increasing and never reused, like a bigserial, so the id is the
-- order of the log and its pagination cursor.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    owner      TEXT    NOT NULL DEFAULT '',
    request_id TEXT    NOT NULL DEFAULT '',
    details    TEXT    NOT NULL DEFAULT '{}',    -- JSON object
    CONSTRAINT audit_events_details_object CHECK (json_type(details) = 'object')
) STRICT;
CREATE INDEX audit_events_owner_id ON audit_events (owner, id DESC);
CREATE INDEX audit_events_target_id ON audit_events (target, id DESC);

-- key_usage_hourly counts checks per key and hour.
CREATE TABLE key_usage_hourly (
    key_id TEXT    NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    hour   INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour)
) STRICT;

-- webhook_deliveries remembers processed webhook ids against replays.
CREATE TABLE webhook_deliveries (
    id          TEXT    PRIMARY KEY,
    received_at INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE key_usage_hourly;
DROP TABLE audit_events;
DROP TABLE revoked_sessions;
DROP TABLE api_keys;
