-- What the senders say about each account, for the operators' view: paused (by bounce's brake,
-- a provider refusal or an operator) and held (quota, warm-up, throttling) with until when.
-- `state_at` orders the events: an older one arriving late changes nothing.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS pause_reason text;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS paused_until timestamptz;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS held_reason text;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS held_until timestamptz;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS state_at timestamptz;
