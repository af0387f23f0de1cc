-- How much an account may send besides its rate: a 24-hour quota, a warm-up ramp for a new
-- account, whether the provider's own limits (SES) are honoured, and its connections in parallel.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS daily_quota integer CHECK (daily_quota > 0);
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS warmup_started_on date;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS warmup_start_per_day integer CHECK (warmup_start_per_day > 0);
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS warmup_growth_per_day numeric CHECK (warmup_growth_per_day > 1);
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS use_provider_limits boolean NOT NULL DEFAULT true;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS max_connections integer NOT NULL DEFAULT 3
    CHECK (max_connections BETWEEN 1 AND 50);
