-- A console test send ("Enviar teste") is a one-recipient campaign of origin 'test': it goes
-- through the same pipeline as the real campaign (personalisation, links, the account's
-- transport) but stays out of the console's campaign list.
ALTER TABLE campaigns DROP CONSTRAINT IF EXISTS campaigns_origin_check;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_origin_check CHECK (origin IN ('console', 'api', 'test'));
