-- A pause can arrive before the account's first configuration (they travel on different
-- queues): the row then holds the pause alone, and the configuration fills it in later.
ALTER TABLE accounts ALTER COLUMN config DROP NOT NULL;
ALTER TABLE accounts ALTER COLUMN configured_at DROP NOT NULL;
