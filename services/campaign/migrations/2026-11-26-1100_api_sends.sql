-- Sends from other systems: API keys, routing rules, stored templates and the API sends
-- themselves (each one a campaign of origin 'api').

-- One row per key; the token is shown once and only its SHA-256 is kept (a 256-bit random token
-- needs no slow hash). `system` names the calling system (or tenant) the key belongs to.
CREATE TABLE IF NOT EXISTS api_keys (
    api_key_id        serial PRIMARY KEY,
    system            text NOT NULL,
    name              text NOT NULL,
    token_prefix      text NOT NULL,          -- shown in listings to tell keys apart
    token_sha256      bytea NOT NULL UNIQUE,
    rate_per_minute   integer NOT NULL DEFAULT 600 CHECK (rate_per_minute > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_system ON api_keys (system);

-- The sender addresses a key may name directly.
CREATE TABLE IF NOT EXISTS api_key_senders (
    api_key_id        integer NOT NULL REFERENCES api_keys ON DELETE CASCADE,
    sender_address_id integer NOT NULL REFERENCES sender_addresses,
    PRIMARY KEY (api_key_id, sender_address_id)
);

-- (system, tenant, message type) -> sender address; tenant '' matches any tenant of the system.
CREATE TABLE IF NOT EXISTS routing_rules (
    routing_rule_id   serial PRIMARY KEY,
    system            text NOT NULL,
    tenant            text NOT NULL DEFAULT '',
    message_type      text NOT NULL,
    sender_address_id integer NOT NULL REFERENCES sender_addresses,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (system, tenant, message_type)
);

CREATE TABLE IF NOT EXISTS templates (
    template_id       serial PRIMARY KEY,
    key               text NOT NULL UNIQUE,
    subject           text NOT NULL,
    html              text NOT NULL,
    text_body         text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted send request; (system, idempotency_key) makes a repeat the same send.
CREATE TABLE IF NOT EXISTS api_sends (
    send_id           uuid PRIMARY KEY,
    system            text NOT NULL,
    idempotency_key   text NOT NULL,
    request_sha256    bytea NOT NULL,         -- the canonical request, to tell a repeat from a reuse
    campaign_id       integer NOT NULL UNIQUE REFERENCES campaigns,
    channel           text NOT NULL CHECK (channel IN ('http', 'amqp')),
    api_key_id        integer REFERENCES api_keys,
    message_type      text,
    tenant            text,
    template_key      text,
    recipients        jsonb,                  -- inline recipients, kept for a scheduled start
    scheduled_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (system, idempotency_key)
);
-- The scheduler looks for sends whose time has come.
CREATE INDEX IF NOT EXISTS api_sends_scheduled ON api_sends (scheduled_at) WHERE scheduled_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS api_sends_system ON api_sends (system, created_at DESC);
