-- +goose Up
-- webhook_deliveries remembers the svix-id of every processed webhook, so a
-- replayed or retried delivery changes nothing the second time. Rows older
-- than the signature tolerance can no longer be replayed and are pruned.
CREATE TABLE webhook_deliveries (
    id          text        PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);

-- +goose Down
DROP TABLE webhook_deliveries;
