-- A delivery whose sender died during its SMTP transaction is an outcome of its own
-- ("indeterminate": it may have been delivered), counted apart and ending the campaign like any.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS indeterminate integer NOT NULL DEFAULT 0;
ALTER TABLE results DROP CONSTRAINT IF EXISTS results_status_check;
ALTER TABLE results ADD CONSTRAINT results_status_check
    CHECK (status IN ('sent', 'failed', 'skipped', 'indeterminate'));
