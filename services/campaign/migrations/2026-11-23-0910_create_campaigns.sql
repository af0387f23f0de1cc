-- Sending accounts, sender addresses, campaigns and their per-recipient results.

CREATE TABLE IF NOT EXISTS accounts (
    account_id                      serial PRIMARY KEY,
    name                            text NOT NULL UNIQUE,
    transport                       text NOT NULL CHECK (transport IN ('smtp', 'ses')),
    smtp_host                       text,
    smtp_port                       integer,
    smtp_security                   text CHECK (smtp_security IN ('starttls', 'tls', 'none')),
    smtp_username                   text,
    smtp_password_encrypted         text,
    ses_region                      text,
    ses_access_key_id               text,
    ses_secret_access_key_encrypted text,
    ses_endpoint_url                text,
    rate_per_second                 numeric NOT NULL DEFAULT 10 CHECK (rate_per_second > 0),
    active                          boolean NOT NULL DEFAULT true,
    created_at                      timestamptz NOT NULL DEFAULT now(),
    updated_at                      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sender_addresses (
    sender_address_id serial PRIMARY KEY,
    account_id        integer NOT NULL REFERENCES accounts,
    name              text NOT NULL,
    email             text NOT NULL UNIQUE,
    reply_to          text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id       serial PRIMARY KEY,
    name              text NOT NULL,
    sender_address_id integer NOT NULL REFERENCES sender_addresses,
    subject           text NOT NULL,
    html              text NOT NULL,
    text_body         text,
    priority          smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    origin            text NOT NULL DEFAULT 'console' CHECK (origin IN ('console', 'api')),
    status            text NOT NULL DEFAULT 'draft'
                      CHECK (status IN ('draft', 'queued', 'sending', 'paused', 'completed', 'cancelled', 'failed')),
    failure_reason    text,
    recipients        integer,            -- unknown until audience resolved the groups
    sent              integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    skipped           integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);

CREATE TABLE IF NOT EXISTS campaign_groups (
    campaign_id integer NOT NULL REFERENCES campaigns ON DELETE CASCADE,
    group_id    integer NOT NULL,      -- owned by audience: no foreign key across services
    position    smallint NOT NULL,
    PRIMARY KEY (campaign_id, group_id)
);

-- One row per recipient with an outcome; recipient_id is the recipient's code in the campaign.
CREATE TABLE IF NOT EXISTS results (
    campaign_id         integer NOT NULL REFERENCES campaigns ON DELETE CASCADE,
    recipient_id        integer NOT NULL,
    email               text NOT NULL,
    name                text NOT NULL DEFAULT '',
    status              text NOT NULL CHECK (status IN ('sent', 'failed', 'skipped')),
    sent_at             timestamptz,
    reason              text,
    provider_message_id text,
    opened_at           timestamptz,        -- first open ("Dt. leitura")
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, recipient_id)
);
