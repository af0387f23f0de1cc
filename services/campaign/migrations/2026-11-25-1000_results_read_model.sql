-- The results read model: per-campaign privacy, the results screen's totals kept as counters
-- (updated in the transaction of the event that changes them, never counted at read time),
-- per-recipient bounce / complaint / click facts, the clicked links per recipient and per
-- campaign, and the indexes that keep filtered keyset pages fast at a million recipients.

-- "full": opens and clicks per recipient; "anonymous": counted, no recipient; "off": none.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS tracking text NOT NULL DEFAULT 'full'
    CHECK (tracking IN ('full', 'anonymous', 'off'));

-- Totals. `read`: recipients with a read date (first human open of a known recipient);
-- `opens`/`total_clicks`: every human open / click, anonymous ones included; `unique_clicks`:
-- recipients who clicked at least once; `unsubscribed`: recipients unsubscribed in either scope
-- (each scope also counted apart); `bounced`/`complained`: recipients; machine ones apart.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS read integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS opens integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS machine_opens integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS unique_clicks integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS total_clicks integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS machine_clicks integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS unsubscribed integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS unsubscribed_campaign integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS unsubscribed_all integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS bounced integer NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS complained integer NOT NULL DEFAULT 0;

ALTER TABLE results ADD COLUMN IF NOT EXISTS clicked_at timestamptz;   -- first human click
ALTER TABLE results ADD COLUMN IF NOT EXISTS clicks integer NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN IF NOT EXISTS bounced_at timestamptz;
ALTER TABLE results ADD COLUMN IF NOT EXISTS bounce_kind text
    CHECK (bounce_kind IN ('permanent', 'transient', 'undetermined'));
ALTER TABLE results ADD COLUMN IF NOT EXISTS bounce_subtype text;
ALTER TABLE results ADD COLUMN IF NOT EXISTS bounce_diagnostic text;
ALTER TABLE results ADD COLUMN IF NOT EXISTS complained_at timestamptz;

-- The links a recipient followed (human clicks), in order of the first click: "URLs abertas".
CREATE TABLE IF NOT EXISTS result_links (
    campaign_id      integer NOT NULL,
    recipient_id     integer NOT NULL,
    url              text NOT NULL,
    clicks           integer NOT NULL,
    first_clicked_at timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, recipient_id, url)
);

-- The per-link click table: clicks, distinct human clickers, machine clicks.
CREATE TABLE IF NOT EXISTS campaign_links (
    campaign_id     integer NOT NULL,
    url             text NOT NULL,
    clicks          integer NOT NULL DEFAULT 0,
    unique_clickers integer NOT NULL DEFAULT 0,
    machine_clicks  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, url)
);

-- Derived statuses are rare at the start of a scan (bounced, unsubscribed, failed): partial
-- indexes in keyset order let a filtered page read only matching rows. Common ones (sent,
-- read) are served by the primary key, stopping at the page's last match.
CREATE INDEX IF NOT EXISTS results_read ON results (campaign_id, recipient_id) WHERE opened_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS results_clicked ON results (campaign_id, recipient_id) WHERE clicked_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS results_unsubscribed ON results (campaign_id, recipient_id)
    WHERE unsubscribed_campaign_at IS NOT NULL OR unsubscribed_all_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS results_bounced ON results (campaign_id, recipient_id) WHERE bounced_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS results_complained ON results (campaign_id, recipient_id)
    WHERE complained_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS results_not_sent ON results (campaign_id, status, recipient_id)
    WHERE status <> 'sent';

-- Substring search on name and e-mail ("Digite algo para filtrar"): trigram indexes answer
-- ILIKE '%term%'. pg_trgm ships with PostgreSQL contrib and is a trusted extension (PG 13+),
-- so a database owner without superuser may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS results_email_trgm ON results USING gin (email gin_trgm_ops);
CREATE INDEX IF NOT EXISTS results_name_trgm ON results USING gin (name gin_trgm_ops);
