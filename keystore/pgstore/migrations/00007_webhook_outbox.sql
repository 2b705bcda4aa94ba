-- +goose Up
-- webhook_outbox holds the outgoing webhook events (key.created,
-- key.revoked, key.rolled, key.expiring, session.revoked) and the state of
-- their delivery. An event is written in the transaction of its change, so
-- a committed change always has one and a rolled-back change never does;
-- odin admin delivers them at least once. (webhook_deliveries, 00004, is the
-- other direction: the ids of Clerk's incoming webhooks.)
CREATE TABLE webhook_outbox (
    id              bigserial   PRIMARY KEY,
    message_id      text        NOT NULL UNIQUE,          -- webhook-id: msg_<base62>
    event_type      text        NOT NULL,
    payload         json        NOT NULL,                 -- the body, as sent
    dedupe_key      text        UNIQUE,                   -- key.expiring: one per key and expiry
    created_at      timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_attempt_at timestamptz,
    last_status     integer     NOT NULL DEFAULT 0,       -- HTTP status of the last failure, 0: none
    last_error      text        NOT NULL DEFAULT '',
    delivered_to    text[]      NOT NULL DEFAULT '{}',    -- endpoints that answered 2xx
    lease_owner     text        NOT NULL DEFAULT '',      -- the worker's claim holding it
    lease_until     timestamptz,
    CONSTRAINT webhook_outbox_status CHECK (status IN ('pending', 'delivered', 'failed', 'skipped'))
);
-- The worker's claim: pending events by due time.
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';
-- The delivery listing of the admin API, by status, newest first.
CREATE INDEX webhook_outbox_status_id ON webhook_outbox (status, id DESC);
-- Pruning old finished events.
CREATE INDEX webhook_outbox_created_at ON webhook_outbox (created_at);

-- +goose Down
DROP TABLE webhook_outbox;
