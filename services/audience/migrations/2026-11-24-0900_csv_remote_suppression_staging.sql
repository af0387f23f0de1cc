-- CSV imports, remote groups, audience's copy of the suppression and unsubscribe lists, and a
-- resumable resolution (resolving -> resolved -> dispatched | failed) staged per campaign.

-- member_count is kept by the statements that add members (a count(*) over a million members
-- per listed group would make the list slow); fields are the custom fields every member has.
ALTER TABLE groups
    ADD COLUMN IF NOT EXISTS member_count         integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS fields               text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS remote_url_encrypted text,      -- Fernet: the URL carries its token
    ADD COLUMN IF NOT EXISTS remote_url_redacted  text,      -- what is shown and logged
    ADD COLUMN IF NOT EXISTS updated_at           timestamptz NOT NULL DEFAULT now();
UPDATE groups g SET member_count = (SELECT count(*) FROM group_members m WHERE m.group_id = g.group_id);
UPDATE groups g SET fields = ARRAY(
    SELECT k FROM (SELECT DISTINCT jsonb_object_keys(fields) AS k FROM group_members WHERE group_id = g.group_id) keys
    WHERE NOT EXISTS (
        SELECT 1 FROM group_members m WHERE m.group_id = g.group_id AND NOT m.fields ? keys.k
    )
    ORDER BY k
);

-- One CSV file imported into a group; its rejected lines are kept for download.
CREATE TABLE IF NOT EXISTS imports (
    import_id   serial PRIMARY KEY,
    group_id    integer NOT NULL REFERENCES groups ON DELETE CASCADE,
    filename    text NOT NULL DEFAULT '',
    encoding    text NOT NULL,
    delimiter   text NOT NULL,
    rows        integer NOT NULL,   -- data rows read (blank lines not counted)
    imported    integer NOT NULL,   -- new members
    invalid     integer NOT NULL,
    duplicate   integer NOT NULL,   -- valid rows whose address the file or the group already had
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS imports_group ON imports (group_id, import_id);

CREATE TABLE IF NOT EXISTS import_errors (
    import_id integer NOT NULL REFERENCES imports ON DELETE CASCADE,
    line      integer NOT NULL,     -- where the record starts in the file (1 = the header)
    reason    text NOT NULL,
    content   text NOT NULL,        -- the raw cells, as read
    PRIMARY KEY (import_id, line)
);

-- Audience's copies of the shared lists, kept by events. A suppression row remembers when its
-- state last changed, so an older event arriving late never undoes a newer one.
CREATE TABLE IF NOT EXISTS suppressions (
    email_key   text PRIMARY KEY,   -- lower(normalised address), as campaign_recipients compares
    suppressed  boolean NOT NULL,
    reason      text NOT NULL DEFAULT '',
    changed_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS unsubscribes (
    email_key         text PRIMARY KEY,
    reason            text NOT NULL DEFAULT '',
    unsubscribed_at   timestamptz NOT NULL
);

-- A resolution is 'resolving' while its groups are staged (possibly a long remote fetch, in many
-- short transactions); a crash leaves it so, and the redelivered campaign.started starts it over.
ALTER TABLE resolutions DROP CONSTRAINT IF EXISTS resolutions_status_check;
ALTER TABLE resolutions ADD CONSTRAINT resolutions_status_check
    CHECK (status IN ('resolving', 'resolved', 'dispatched', 'failed'));
ALTER TABLE resolutions
    ADD COLUMN IF NOT EXISTS invalid      integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS suppressed   integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unsubscribed integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS attempts     integer NOT NULL DEFAULT 1;

-- Everything read from a campaign's groups, before de-duplication; emptied when the resolution
-- ends or starts over. UNLOGGED: COPY is much faster without WAL, and a database crash that
-- empties it only makes an unfinished resolution start over, which it does anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS staged_members (
    campaign_id integer NOT NULL,
    position    integer NOT NULL,   -- the group's place in the campaign's list (first wins)
    seq         bigint NOT NULL,    -- order within the group
    email       text NOT NULL,      -- normalised when valid, as read when not
    name        text NOT NULL,
    fields      jsonb NOT NULL DEFAULT '{}',  -- remote rows have none (COPY leaves it out)
    invalid     text                -- why the address was refused; NULL when valid
);
CREATE INDEX IF NOT EXISTS staged_members_campaign ON staged_members (campaign_id);
