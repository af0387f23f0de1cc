-- Every feedback message accepted (SNS HTTP, raw delivery or SQS), by SNS's MessageId: SNS
-- delivers at least once, and a redelivery must find its row and change nothing.
CREATE TABLE IF NOT EXISTS notifications (
    message_id  text PRIMARY KEY,
    topic_arn   text NOT NULL,
    account_id  integer NOT NULL,
    kind        text NOT NULL,
    payload     text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- One row per recipient of each notification. campaign_id is NULL for a message that is not
-- ours (another system sending through the same account): kept and counted per account.
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id         bigserial PRIMARY KEY,
    message_id          text NOT NULL REFERENCES notifications,
    account_id          integer NOT NULL,
    kind                text NOT NULL,
    email               text NOT NULL,
    provider_message_id text NOT NULL,
    campaign_id         integer,
    recipient_id        integer,
    bounce_type         text NOT NULL DEFAULT '',
    subtype             text NOT NULL DEFAULT '',
    diagnostic          text NOT NULL DEFAULT '',
    occurred_at         timestamptz NOT NULL
);
-- Soft-bounce counting looks up one address's recent transient bounces.
CREATE INDEX IF NOT EXISTS feedback_transient_bounces ON feedback (email, occurred_at)
    WHERE kind = 'bounce' AND bounce_type = 'Transient';
CREATE INDEX IF NOT EXISTS feedback_unmatched ON feedback (account_id) WHERE campaign_id IS NULL;

-- The suppression list shared by every account: an address here receives no mail until an
-- admin removes it. Addresses are stored lower-cased, so one address has one row.
CREATE TABLE IF NOT EXISTS suppressions (
    suppression_id bigserial PRIMARY KEY,
    email          text NOT NULL UNIQUE,
    reason         text NOT NULL,
    diagnostic     text NOT NULL DEFAULT '',
    account_id     integer,
    campaign_id    integer,
    suppressed_at  timestamptz NOT NULL
);
