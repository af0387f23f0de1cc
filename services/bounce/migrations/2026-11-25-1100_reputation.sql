-- The reputation brake: bounce's own copy of the sending accounts, the counts it judges accounts
-- without CloudWatch by, the state of each account's brake, admin overrides, and the rates read
-- at every poll (the console's "uso das contas").

-- The accounts as last configured (account.configured); `configured_at` is the event's time, so an
-- older configuration delivered late never overwrites a newer one.
CREATE TABLE IF NOT EXISTS reputation_accounts (
    account_id          integer PRIMARY KEY,
    name                text NOT NULL,
    transport           text NOT NULL,
    active              boolean NOT NULL,
    ses_region          text,
    ses_access_key_id   text,
    -- Fernet token, as the account event carries it; decrypted only to call CloudWatch.
    ses_secret_encrypted text,
    ses_endpoint_url    text,
    bounce_control      boolean NOT NULL,
    bounce_threshold    double precision NOT NULL,
    complaint_threshold double precision NOT NULL,
    pause_hours         double precision NOT NULL,
    configured_at       timestamptz NOT NULL
);

-- Per account and minute, what was sent, hard-bounced and complained; a day of minutes is the
-- window the rates are computed over. One row per minute keeps writes to one upsert per event.
CREATE TABLE IF NOT EXISTS reputation_counts (
    account_id integer NOT NULL,
    minute     timestamptz NOT NULL,
    sent       integer NOT NULL DEFAULT 0,
    bounced    integer NOT NULL DEFAULT 0,
    complained integer NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, minute)
);

-- An account the brake paused, until when and why; the row goes when the brake resumes it.
CREATE TABLE IF NOT EXISTS reputation_pauses (
    account_id integer PRIMARY KEY,
    paused_at  timestamptz NOT NULL,
    until      timestamptz NOT NULL,
    reason     text NOT NULL
);

-- Admin decisions to ignore the brake (until a date, or until switched off), kept as a log:
-- the override in force is the account's latest row not cleared and not expired.
CREATE TABLE IF NOT EXISTS reputation_overrides (
    override_id bigserial PRIMARY KEY,
    account_id  integer NOT NULL,
    until       timestamptz,
    reason      text NOT NULL,
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL,
    cleared_by  text,
    cleared_at  timestamptz
);
CREATE INDEX IF NOT EXISTS reputation_overrides_account ON reputation_overrides (account_id, override_id);

-- One row per account per poll: the rates read (NULL: not known, e.g. too few sends to judge),
-- where they came from, and the brake state that followed.
CREATE TABLE IF NOT EXISTS reputation_history (
    account_id     integer NOT NULL,
    polled_at      timestamptz NOT NULL,
    source         text NOT NULL,
    bounce_rate    double precision,
    complaint_rate double precision,
    sent           integer,
    paused         boolean NOT NULL,
    PRIMARY KEY (account_id, polled_at)
);
