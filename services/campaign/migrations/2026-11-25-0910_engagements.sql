-- Every open and click as tracking reported it, once per event: the raw facts the results are
-- counted from. Machine ones (image proxies, link scanners) and anonymous ones (recipient 0)
-- are kept and counted apart; only a person's open gives a recipient its read date.
CREATE TABLE IF NOT EXISTS engagements (
    event_id     uuid PRIMARY KEY,
    campaign_id  integer NOT NULL,
    recipient_id integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('open', 'click')),
    url          text,
    machine      boolean NOT NULL,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS engagements_campaign ON engagements (campaign_id, kind);
