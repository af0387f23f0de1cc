-- Groups and their members; campaign resolutions and their staged recipients.

CREATE TABLE IF NOT EXISTS groups (
    group_id   serial PRIMARY KEY,
    name       text NOT NULL,
    kind       text NOT NULL DEFAULT 'static' CHECK (kind IN ('static', 'csv', 'remote')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- email is stored normalised (domain lower-cased); unique per group case-insensitively.
CREATE TABLE IF NOT EXISTS group_members (
    group_id  integer NOT NULL REFERENCES groups ON DELETE CASCADE,
    member_id bigserial,
    email     text NOT NULL,
    name      text NOT NULL DEFAULT '',
    fields    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (group_id, member_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS group_members_email ON group_members (group_id, lower(email));

-- One row per started campaign. Batches are published in recipient order and `dispatched_upto`
-- is the checkpoint: a restart goes on from the last confirmed batch.
CREATE TABLE IF NOT EXISTS resolutions (
    campaign_id     integer PRIMARY KEY,
    account_id      integer NOT NULL,
    priority        smallint NOT NULL,
    status          text NOT NULL CHECK (status IN ('resolved', 'dispatched', 'failed')),
    included        integer NOT NULL DEFAULT 0,
    duplicate       integer NOT NULL DEFAULT 0,
    dispatched_upto integer NOT NULL DEFAULT 0,
    failure_reason  text,
    trace_headers   jsonb NOT NULL DEFAULT '{}',   -- trace context of the campaign start
    resolved_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz
);
CREATE INDEX IF NOT EXISTS resolutions_pending ON resolutions (resolved_at) WHERE status = 'resolved';

-- The resolved audience of a campaign: de-duplicated, numbered 1..n in group order.
CREATE TABLE IF NOT EXISTS campaign_recipients (
    campaign_id  integer NOT NULL REFERENCES resolutions ON DELETE CASCADE,
    recipient_id integer NOT NULL,
    email        text NOT NULL,
    name         text NOT NULL DEFAULT '',
    fields       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (campaign_id, recipient_id)
);
