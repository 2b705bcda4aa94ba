-- +goose Up
-- revoked_sessions lists logged-out sessions (Clerk sid). Every token of a
-- listed session is refused until expires_at, after which no token of the
-- session can still be valid (tokens longer-lived than the retention are
-- refused outright), so the row can be pruned.
CREATE TABLE revoked_sessions (
    session_id text        PRIMARY KEY,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    reason     text        NOT NULL DEFAULT ''
);

-- Replicas load revocations newer than their last sync.
CREATE INDEX revoked_sessions_revoked_at ON revoked_sessions (revoked_at);
-- Pruning deletes expired rows.
CREATE INDEX revoked_sessions_expires_at ON revoked_sessions (expires_at);

-- +goose Down
DROP TABLE revoked_sessions;
