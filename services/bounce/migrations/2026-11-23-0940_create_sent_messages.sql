-- Every message the providers accepted, so that feedback (bounce, complaint), which names the
-- provider's message id, can be traced back to its campaign, recipient and account.
CREATE TABLE IF NOT EXISTS sent_messages (
    provider_message_id text PRIMARY KEY,
    campaign_id         integer NOT NULL,
    recipient_id        integer NOT NULL,
    account_id          integer NOT NULL,
    email               text NOT NULL,
    sent_at             timestamptz NOT NULL
);
