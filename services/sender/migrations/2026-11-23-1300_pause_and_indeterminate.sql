-- Pause state of accounts and campaigns, batches set aside while their campaign is paused,
-- sender's copies of the suppression and global unsubscribe lists, and the indeterminate
-- outcome of a delivery whose sender died during its SMTP transaction.

-- `state_at` orders pause/resume events: an older one arriving late changes nothing.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS pause_reason text;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS paused_until timestamptz;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS state_at timestamptz;

ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS state_at timestamptz;

-- `claimed_by` names the sender process that wrote the claim: a claim of a process that is
-- gone is a send that may or may not have happened.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS account_id integer;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('sending', 'sent', 'failed', 'skipped', 'indeterminate'));
-- The 24-hour quota window counts an account's sends by minute.
CREATE INDEX IF NOT EXISTS deliveries_sent_by_account
    ON deliveries (account_id, finished_at) WHERE status = 'sent';

-- SendBatch messages of a paused campaign, taken off the account's queue so the account goes on
-- with other campaigns; resuming the campaign publishes them again with their priority.
CREATE TABLE IF NOT EXISTS parked_batches (
    batch_id    uuid PRIMARY KEY,
    campaign_id integer NOT NULL,
    account_id  integer NOT NULL,
    priority    smallint NOT NULL,
    body        bytea NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS parked_batches_campaign ON parked_batches (campaign_id);

-- Addresses no account may send to, and those who left every future campaign (lower-cased).
-- A lifted suppression stays as a row with `suppressed` false: suppress and unsuppress travel on
-- different queues, and a suppression older than its lifting must not come back when it arrives late.
CREATE TABLE IF NOT EXISTS suppressed_addresses (
    email      text PRIMARY KEY,
    suppressed boolean NOT NULL,
    reason     text NOT NULL,
    changed_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS unsubscribed_addresses (
    email      text PRIMARY KEY,
    changed_at timestamptz NOT NULL
);
