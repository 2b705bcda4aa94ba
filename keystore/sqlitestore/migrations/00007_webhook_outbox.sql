-- +goose Up
-- As PostgreSQL's webhook_outbox (keystore/pgstore/migrations): the outgoing
-- webhook events, written in the transaction of their change, and the state
-- of their delivery. delivered_to is a JSON array of endpoint names.
CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    dedupe_key      TEXT    UNIQUE,
    created_at      INTEGER NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    delivered_to    TEXT    NOT NULL DEFAULT '[]',
    lease_owner     TEXT    NOT NULL DEFAULT '',
    lease_until     INTEGER,
    CONSTRAINT webhook_outbox_status CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
    CONSTRAINT webhook_outbox_payload_object CHECK (json_type(payload) = 'object'),
    CONSTRAINT webhook_outbox_delivered_to_array CHECK (json_type(delivered_to) = 'array')
) STRICT;
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX webhook_outbox_status_id ON webhook_outbox (status, id DESC);
CREATE INDEX webhook_outbox_created_at ON webhook_outbox (created_at);

-- +goose Down
DROP TABLE webhook_outbox;
