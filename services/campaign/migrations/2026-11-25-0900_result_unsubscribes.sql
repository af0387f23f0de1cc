-- A recipient's unsubscribes, recorded on its result from tracking's `unsubscribe.requested`:
-- from this campaign, from every future campaign ("Cancelou desta campanha", "Cancelou das
-- futuras"), each dated once, with the reason the recipient gave.
ALTER TABLE results ADD COLUMN IF NOT EXISTS unsubscribed_campaign_at timestamptz;
ALTER TABLE results ADD COLUMN IF NOT EXISTS unsubscribed_all_at timestamptz;
ALTER TABLE results ADD COLUMN IF NOT EXISTS unsubscribe_reason text;
