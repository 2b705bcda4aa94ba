-- +goose Up
-- audit_events records every change to keys and sessions: who did what to
-- which target, when, under which request id. Never a secret.
CREATE TABLE audit_events (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,            -- user id, "operator", or "clerk-webhook"
    action     text        NOT NULL,            -- key.created, key.rolled, key.revoked, session.revoked
    target     text        NOT NULL,            -- key id or session id
    owner      text        NOT NULL DEFAULT '', -- tenant owning the target (user or org id)
    request_id text        NOT NULL DEFAULT '',
    details    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_owner_id ON audit_events (owner, id DESC);
CREATE INDEX audit_events_target_id ON audit_events (target, id DESC);

-- key_usage_hourly counts checks per key and hour, written in batches by
-- odin authz off the hot path.
CREATE TABLE key_usage_hourly (
    key_id  text        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    hour    timestamptz NOT NULL,
    count   bigint      NOT NULL,
    PRIMARY KEY (key_id, hour)
);

-- +goose Down
DROP TABLE key_usage_hourly;
DROP TABLE audit_events;
