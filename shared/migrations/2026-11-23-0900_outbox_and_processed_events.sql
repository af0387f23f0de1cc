-- Infrastructure every service schema has (applied by shared.db.migrate before the service's own).

-- Messages written in the same transaction as the change they announce, published by the
-- outbox relay after commit (publisher confirms), then deleted.
CREATE TABLE IF NOT EXISTS outbox (
    outbox_id   bigserial PRIMARY KEY,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    body        bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',
    message_id  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Events already handled: a redelivered event finds its id here and is ignored.
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
