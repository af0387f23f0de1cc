-- When an admin last took each address off the suppression list: soft bounces from before the
-- release are not held against the address again (else one more greylisting right after the
-- release would suppress it at once), so its count starts afresh from there.
CREATE TABLE IF NOT EXISTS suppression_releases (
    email       text PRIMARY KEY,
    released_at timestamptz NOT NULL
);
