-- The reputation brake's settings of each account, kept where the account is edited and sent to
-- bounce in `account.configured`: "controle de bounce pelo CloudWatch" (an SES account judged by
-- SES's own rates), the bounce and complaint thresholds, and how long a pause lasts.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS bounce_control boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS bounce_threshold double precision NOT NULL DEFAULT 0.05
    CHECK (bounce_threshold > 0 AND bounce_threshold <= 1);
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS complaint_threshold double precision NOT NULL DEFAULT 0.001
    CHECK (complaint_threshold > 0 AND complaint_threshold <= 1);
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS pause_hours double precision NOT NULL DEFAULT 24
    CHECK (pause_hours > 0);
