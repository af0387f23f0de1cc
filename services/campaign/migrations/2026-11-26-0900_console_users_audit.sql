-- Console users (identity from single sign-on; only the role and the linked sender addresses
-- are edited here), which sender addresses each may use, and the audit log of administrative
-- actions.

CREATE TABLE IF NOT EXISTS users (
    user_id       serial PRIMARY KEY,           -- the "Código" shown in the console
    name          text NOT NULL,
    email         text NOT NULL,
    role          text NOT NULL DEFAULT 'normal' CHECK (role IN ('admin', 'normal')),
    subject       text,                         -- the identity provider's `sub`, when known
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
-- One user per address whatever its case: login finds the row by it.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

CREATE TABLE IF NOT EXISTS user_sender_addresses (
    user_id           integer NOT NULL REFERENCES users ON DELETE CASCADE,
    sender_address_id integer NOT NULL REFERENCES sender_addresses ON DELETE CASCADE,
    PRIMARY KEY (user_id, sender_address_id)
);
CREATE INDEX IF NOT EXISTS user_sender_addresses_sender ON user_sender_addresses (sender_address_id);

-- Who did what, when. The actor's e-mail is kept as text so a removed user's actions stay
-- readable; user_id is only a convenience link.
CREATE TABLE IF NOT EXISTS audit_log (
    audit_id bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    user_id  integer REFERENCES users ON DELETE SET NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text,
    details  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at DESC);
