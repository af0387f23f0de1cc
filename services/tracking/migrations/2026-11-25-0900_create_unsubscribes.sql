-- Every unsubscribe tracking accepted, kept before the recipient sees the confirmation: the
-- law cares about these, so they must outlive a broker outage (the outbox publishes them later)
-- and stay as proof of when and how the recipient asked. One row per delivery and scope: asking
-- again changes nothing, and leaving one campaign, then all, keeps both.
CREATE TABLE IF NOT EXISTS unsubscribes (
    campaign_id  integer NOT NULL,
    recipient_id integer NOT NULL CHECK (recipient_id > 0),
    scope        text NOT NULL CHECK (scope IN ('campaign', 'all')),
    reason       text NOT NULL DEFAULT '',
    method       text NOT NULL CHECK (method IN ('page', 'one_click')),
    requested_at timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, recipient_id, scope)
);
