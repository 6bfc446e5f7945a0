-- The operator console (issue #22): operator accounts and their sessions. Neither is tenant data,
-- so neither has a tenant_id or row-level security: an operator works across tenants, and each
-- of their reads of a tenant's data is recorded in that tenant's audit chain instead.
--
-- A password is kept only as its argon2id hash in libsodium's string form ($argon2id$v=19$…);
-- a session only as the BLAKE2b-256 hash of its cookie, so a copy of this table opens no session.
SET LOCAL ROLE bankworker_owner;

CREATE TABLE bankworker.operators (
  operator_id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
  password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%' AND length(password_hash) <= 256),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bankworker.operator_sessions (
  session_hash bytea PRIMARY KEY CHECK (length(session_hash) = 32),
  operator_id uuid NOT NULL REFERENCES bankworker.operators ON DELETE CASCADE,
  -- Compared (in constant time, by the worker) with the token every form sends back.
  csrf_token text NOT NULL CHECK (length(csrf_token) = 64),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX operator_sessions_expiry ON bankworker.operator_sessions (expires_at);
CREATE INDEX operator_sessions_operator ON bankworker.operator_sessions (operator_id);

-- The worker adds and removes operators (`bankworker operator add|remove`, as the runtime login)
-- and opens, reads and ends their sessions; it never updates a password hash in place.
GRANT SELECT, INSERT, DELETE ON bankworker.operators TO bankworker_worker;
GRANT SELECT, INSERT, DELETE ON bankworker.operator_sessions TO bankworker_worker;
