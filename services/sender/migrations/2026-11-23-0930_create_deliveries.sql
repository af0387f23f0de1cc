-- Sender's copies of accounts and campaign contents (kept by events), and the delivery ledger.

-- The latest AccountConfigured event of each account (secrets stay encrypted inside it).
CREATE TABLE IF NOT EXISTS accounts (
    account_id    integer PRIMARY KEY,
    config        jsonb NOT NULL,
    configured_at timestamptz NOT NULL
);

-- The content of started campaigns; `cancelled` may arrive before the content does.
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id integer PRIMARY KEY,
    content     jsonb,
    cancelled   boolean NOT NULL DEFAULT false
);

-- One row per (campaign, recipient), written before the provider is called and completed after:
-- a redelivered batch finds the row and does not send again.
CREATE TABLE IF NOT EXISTS deliveries (
    campaign_id         integer NOT NULL,
    recipient_id        integer NOT NULL,
    email               text NOT NULL,
    status              text NOT NULL CHECK (status IN ('sending', 'sent', 'failed', 'skipped')),
    provider_message_id text,
    reason              text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    PRIMARY KEY (campaign_id, recipient_id)
);
