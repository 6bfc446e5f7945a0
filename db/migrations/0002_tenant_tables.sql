-- The tenant tables every module writes. Each one has tenant_id leading its primary key (so it can
-- later be distributed by tenant), a foreign key to its tenant, and row-level security enabled,
-- forced and keyed on SET LOCAL bankworker.tenant_id. The jobs table comes with the queue.
SET LOCAL ROLE bankworker_owner;

-- Currencies and their minor-unit exponents (ISO 4217; JPY 0, USD 2, BHD 3). Not tenant data:
-- every role reads it. Unofficial currencies (iso = false) get a declared exponent.
CREATE TABLE bankworker.currencies (
  code text PRIMARY KEY CHECK (code ~ '^[A-Z0-9]{3,8}$'),
  exponent smallint NOT NULL CHECK (exponent BETWEEN 0 AND 18),
  iso boolean NOT NULL DEFAULT true
);
INSERT INTO bankworker.currencies (code, exponent) VALUES
  ('AED', 2),
  ('AFN', 2),
  ('ALL', 2),
  ('AMD', 2),
  ('ANG', 2),
  ('AOA', 2),
  ('ARS', 2),
  ('AUD', 2),
  ('AWG', 2),
  ('AZN', 2),
  ('BAM', 2),
  ('BBD', 2),
  ('BDT', 2),
  ('BGN', 2),
  ('BHD', 3),
  ('BIF', 0),
  ('BMD', 2),
  ('BND', 2),
  ('BOB', 2),
  ('BOV', 2),
  ('BRL', 2),
  ('BSD', 2),
  ('BTN', 2),
  ('BWP', 2),
  ('BYN', 2),
  ('BZD', 2),
  ('CAD', 2),
  ('CDF', 2),
  ('CHE', 2),
  ('CHF', 2),
  ('CHW', 2),
  ('CLF', 4),
  ('CLP', 0),
  ('CNY', 2),
  ('COP', 2),
  ('COU', 2),
  ('CRC', 2),
  ('CUC', 2),
  ('CUP', 2),
  ('CVE', 2),
  ('CZK', 2),
  ('DJF', 0),
  ('DKK', 2),
  ('DOP', 2),
  ('DZD', 2),
  ('EGP', 2),
  ('ERN', 2),
  ('ETB', 2),
  ('EUR', 2),
  ('FJD', 2),
  ('FKP', 2),
  ('GBP', 2),
  ('GEL', 2),
  ('GHS', 2),
  ('GIP', 2),
  ('GMD', 2),
  ('GNF', 0),
  ('GTQ', 2),
  ('GYD', 2),
  ('HKD', 2),
  ('HNL', 2),
  ('HRK', 2),
  ('HTG', 2),
  ('HUF', 2),
  ('IDR', 2),
  ('ILS', 2),
  ('INR', 2),
  ('IQD', 3),
  ('IRR', 2),
  ('ISK', 0),
  ('JMD', 2),
  ('JOD', 3),
  ('JPY', 0),
  ('KES', 2),
  ('KGS', 2),
  ('KHR', 2),
  ('KMF', 0),
  ('KPW', 2),
  ('KRW', 0),
  ('KWD', 3),
  ('KYD', 2),
  ('KZT', 2),
  ('LAK', 2),
  ('LBP', 2),
  ('LKR', 2),
  ('LRD', 2),
  ('LSL', 2),
  ('LYD', 3),
  ('MAD', 2),
  ('MDL', 2),
  ('MGA', 2),
  ('MKD', 2),
  ('MMK', 2),
  ('MNT', 2),
  ('MOP', 2),
  ('MRU', 2),
  ('MUR', 2),
  ('MVR', 2),
  ('MWK', 2),
  ('MXN', 2),
  ('MXV', 2),
  ('MYR', 2),
  ('MZN', 2),
  ('NAD', 2),
  ('NGN', 2),
  ('NIO', 2),
  ('NOK', 2),
  ('NPR', 2),
  ('NZD', 2),
  ('OMR', 3),
  ('PAB', 2),
  ('PEN', 2),
  ('PGK', 2),
  ('PHP', 2),
  ('PKR', 2),
  ('PLN', 2),
  ('PYG', 0),
  ('QAR', 2),
  ('RON', 2),
  ('RSD', 2),
  ('RUB', 2),
  ('RWF', 0),
  ('SAR', 2),
  ('SBD', 2),
  ('SCR', 2),
  ('SDG', 2),
  ('SEK', 2),
  ('SGD', 2),
  ('SHP', 2),
  ('SLE', 2),
  ('SLL', 2),
  ('SOS', 2),
  ('SRD', 2),
  ('SSP', 2),
  ('STN', 2),
  ('SVC', 2),
  ('SYP', 2),
  ('SZL', 2),
  ('THB', 2),
  ('TJS', 2),
  ('TMT', 2),
  ('TND', 3),
  ('TOP', 2),
  ('TRY', 2),
  ('TTD', 2),
  ('TWD', 2),
  ('TZS', 2),
  ('UAH', 2),
  ('UGX', 0),
  ('USD', 2),
  ('USN', 2),
  ('UYI', 0),
  ('UYU', 2),
  ('UYW', 4),
  ('UZS', 2),
  ('VED', 2),
  ('VES', 2),
  ('VND', 0),
  ('VUV', 0),
  ('WST', 2),
  ('XAF', 0),
  ('XCD', 2),
  ('XOF', 0),
  ('XPF', 0),
  ('YER', 2),
  ('ZAR', 2),
  ('ZMW', 2),
  ('ZWL', 2);

CREATE TABLE bankworker.tenants (
  tenant_id uuid PRIMARY KEY,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'offboarded')),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A bank connection (a Plaid Item). The access token lives only in sealed_secrets.
CREATE TABLE bankworker.connections (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  connection_id uuid NOT NULL,
  provider text NOT NULL DEFAULT 'plaid' CHECK (provider IN ('plaid')),
  environment text NOT NULL CHECK (environment IN ('sandbox', 'development', 'production')),
  item_id text CHECK (length(item_id) <= 256),
  institution_id text CHECK (length(institution_id) <= 256),
  institution_name text CHECK (length(institution_name) <= 512),
  status text NOT NULL DEFAULT 'linking'
    CHECK (status IN ('linking', 'active', 'needs_reauth', 'revoking', 'revoked')),
  sync_cursor text CHECK (length(sync_cursor) <= 4096),
  next_sync_at timestamptz,
  last_synced_at timestamptz,
  last_error text CHECK (length(last_error) <= 2048),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, connection_id),
  UNIQUE (tenant_id, item_id)
);

-- Envelope-encrypted secrets (Plaid access tokens, Stripe webhook secrets and API keys). The
-- subject is the row the secret belongs to; it is bound into the ciphertext's associated data.
CREATE TABLE bankworker.sealed_secrets (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  secret_id uuid NOT NULL,
  purpose text NOT NULL CHECK (purpose IN ('plaid.access_token', 'stripe.webhook_secret', 'stripe.api_key')),
  subject_id text NOT NULL CHECK (length(subject_id) BETWEEN 1 AND 256),
  kek_version integer NOT NULL CHECK (kek_version > 0),
  wrapped_data_key bytea NOT NULL CHECK (length(wrapped_data_key) <= 1024),
  envelope bytea NOT NULL CHECK (length(envelope) <= 65536),
  created_at timestamptz NOT NULL DEFAULT now(),
  rewrapped_at timestamptz,
  PRIMARY KEY (tenant_id, secret_id)
);
CREATE INDEX sealed_secrets_subject ON bankworker.sealed_secrets (tenant_id, purpose, subject_id);
CREATE INDEX sealed_secrets_kek_version ON bankworker.sealed_secrets (tenant_id, kek_version);

CREATE TABLE bankworker.accounts (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  account_id text NOT NULL CHECK (length(account_id) BETWEEN 1 AND 256),
  connection_id uuid NOT NULL,
  name text NOT NULL CHECK (length(name) <= 512),
  official_name text CHECK (length(official_name) <= 512),
  mask text CHECK (length(mask) <= 16),
  type text NOT NULL CHECK (length(type) <= 64),
  subtype text CHECK (length(subtype) <= 64),
  currency text NOT NULL REFERENCES bankworker.currencies,
  current_balance_minor bigint,
  available_balance_minor bigint,
  limit_minor bigint,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, account_id),
  FOREIGN KEY (tenant_id, connection_id) REFERENCES bankworker.connections
);

-- Bank transactions, upserted by Plaid's transaction_id. Inflow is positive. A removed
-- transaction is tombstoned (removed_at), not deleted, so a replayed page cannot resurrect it.
CREATE TABLE bankworker.transactions (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  transaction_id text NOT NULL CHECK (length(transaction_id) BETWEEN 1 AND 256),
  account_id text NOT NULL,
  connection_id uuid NOT NULL,
  amount_minor bigint NOT NULL,
  currency text NOT NULL REFERENCES bankworker.currencies,
  date date NOT NULL,
  authorized_date date,
  name text NOT NULL CHECK (length(name) <= 1024),
  merchant_name text CHECK (length(merchant_name) <= 512),
  payment_channel text CHECK (length(payment_channel) <= 64),
  category_primary text CHECK (length(category_primary) <= 128),
  category_detailed text CHECK (length(category_detailed) <= 128),
  pending boolean NOT NULL,
  pending_transaction_id text CHECK (length(pending_transaction_id) <= 256),
  removed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, transaction_id),
  FOREIGN KEY (tenant_id, connection_id) REFERENCES bankworker.connections
);
CREATE INDEX transactions_account_date ON bankworker.transactions (tenant_id, account_id, date);

-- Verified Stripe events as received (the inbox). One row per event id per tenant.
CREATE TABLE bankworker.stripe_events (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  event_id text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 256),
  type text NOT NULL CHECK (length(type) <= 256),
  account text CHECK (length(account) <= 256),
  livemode boolean NOT NULL,
  created_at timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  body jsonb NOT NULL,
  state text NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'posted', 'ignored', 'failed')),
  posted_at timestamptz,
  PRIMARY KEY (tenant_id, event_id)
);

-- The tenant's chart of accounts.
CREATE TABLE bankworker.ledger_accounts (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  code text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_.:-]{0,127}$'),
  name text NOT NULL CHECK (length(name) <= 256),
  kind text NOT NULL CHECK (kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, code)
);

-- Journal entries are immutable; corrections are reversing entries. The idempotency key is the
-- money object's id plus its leg (ch_…:gross), unique per tenant.
CREATE TABLE bankworker.journal_entries (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  entry_id uuid NOT NULL,
  idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 256),
  description text NOT NULL CHECK (length(description) <= 1024),
  occurred_at timestamptz NOT NULL,
  posted_at timestamptz NOT NULL DEFAULT now(),
  source text CHECK (length(source) <= 256),
  reverses_entry_id uuid,
  PRIMARY KEY (tenant_id, entry_id),
  UNIQUE (tenant_id, idempotency_key)
);

CREATE TABLE bankworker.journal_lines (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  entry_id uuid NOT NULL,
  line_no smallint NOT NULL CHECK (line_no >= 0),
  account_code text NOT NULL,
  amount_minor bigint NOT NULL CHECK (amount_minor <> 0),
  currency text NOT NULL REFERENCES bankworker.currencies,
  PRIMARY KEY (tenant_id, entry_id, line_no),
  FOREIGN KEY (tenant_id, entry_id) REFERENCES bankworker.journal_entries,
  FOREIGN KEY (tenant_id, account_code) REFERENCES bankworker.ledger_accounts
);

-- Checked at commit: an entry has at least two lines and they sum to zero in every currency.
-- Deferred, so an entry and its lines are inserted in any order within one transaction.
CREATE FUNCTION bankworker.check_entry_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  line_count integer;
  unbalanced text;
BEGIN
  SELECT count(*) INTO line_count FROM bankworker.journal_lines
   WHERE tenant_id = NEW.tenant_id AND entry_id = NEW.entry_id;
  IF line_count < 2 THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two', NEW.entry_id, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT currency INTO unbalanced FROM bankworker.journal_lines
   WHERE tenant_id = NEW.tenant_id AND entry_id = NEW.entry_id
   GROUP BY currency HAVING sum(amount_minor) <> 0 LIMIT 1;
  IF unbalanced IS NOT NULL THEN
    RAISE EXCEPTION 'journal entry % does not balance in %', NEW.entry_id, unbalanced
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER journal_entry_balanced AFTER INSERT ON bankworker.journal_entries
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bankworker.check_entry_balanced();
CREATE CONSTRAINT TRIGGER journal_line_balanced AFTER INSERT ON bankworker.journal_lines
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bankworker.check_entry_balanced();

-- Per-tenant hash chain of every state change; each hash signed with Ed25519.
CREATE TABLE bankworker.audit_log (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  seq bigint NOT NULL CHECK (seq > 0),
  occurred_at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL CHECK (length(actor) <= 256),
  action text NOT NULL CHECK (length(action) <= 128),
  subject text NOT NULL CHECK (length(subject) <= 256),
  details jsonb NOT NULL DEFAULT '{}',
  prev_hash bytea NOT NULL,
  hash bytea NOT NULL,
  signature bytea NOT NULL,
  signing_key_id text NOT NULL CHECK (length(signing_key_id) <= 128),
  PRIMARY KEY (tenant_id, seq)
);

-- Every call to a provider: who, where, outcome, sizes, latency, how much was redacted.
CREATE TABLE bankworker.external_calls (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  call_id bigint GENERATED BY DEFAULT AS IDENTITY,
  provider text NOT NULL CHECK (provider IN ('plaid', 'stripe', 'vault')),
  endpoint text NOT NULL CHECK (length(endpoint) <= 256),
  http_status integer,
  error_code text CHECK (length(error_code) <= 128),
  bytes_sent bigint NOT NULL CHECK (bytes_sent >= 0),
  bytes_received bigint NOT NULL CHECK (bytes_received >= 0),
  latency_us bigint NOT NULL CHECK (latency_us >= 0),
  redactions integer NOT NULL DEFAULT 0 CHECK (redactions >= 0),
  occurred_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, call_id)
);
CREATE INDEX external_calls_occurred_at ON bankworker.external_calls (occurred_at);

CALL bankworker.enable_tenant_rls('bankworker.tenants');
CALL bankworker.enable_tenant_rls('bankworker.connections');
CALL bankworker.enable_tenant_rls('bankworker.sealed_secrets');
CALL bankworker.enable_tenant_rls('bankworker.accounts');
CALL bankworker.enable_tenant_rls('bankworker.transactions');
CALL bankworker.enable_tenant_rls('bankworker.stripe_events');
CALL bankworker.enable_tenant_rls('bankworker.ledger_accounts');
CALL bankworker.enable_tenant_rls('bankworker.journal_entries');
CALL bankworker.enable_tenant_rls('bankworker.journal_lines');
CALL bankworker.enable_tenant_rls('bankworker.audit_log');
CALL bankworker.enable_tenant_rls('bankworker.external_calls');

CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON bankworker.journal_entries
  FOR EACH ROW EXECUTE FUNCTION bankworker.reject_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON bankworker.journal_entries
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.reject_change();
CREATE TRIGGER journal_lines_immutable BEFORE UPDATE OR DELETE ON bankworker.journal_lines
  FOR EACH ROW EXECUTE FUNCTION bankworker.reject_change();
CREATE TRIGGER journal_lines_no_truncate BEFORE TRUNCATE ON bankworker.journal_lines
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.reject_change();
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON bankworker.audit_log
  FOR EACH ROW EXECUTE FUNCTION bankworker.reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON bankworker.audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.reject_change();

-- The worker reads and writes tenant data (under RLS); it only appends to journal and audit.
GRANT SELECT ON bankworker.currencies TO bankworker_worker, bankworker_app;
GRANT SELECT, INSERT, UPDATE ON bankworker.tenants, bankworker.stripe_events,
  bankworker.ledger_accounts TO bankworker_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON bankworker.connections, bankworker.sealed_secrets,
  bankworker.accounts, bankworker.transactions TO bankworker_worker;
GRANT SELECT, INSERT ON bankworker.journal_entries, bankworker.journal_lines,
  bankworker.audit_log TO bankworker_worker;
GRANT SELECT, INSERT, DELETE ON bankworker.external_calls TO bankworker_worker;

-- The customer's app reads its tenant's bank data and ledger under RLS, and nothing else: never a
-- sealed secret, the audit log or the external-call log.
GRANT SELECT ON bankworker.accounts, bankworker.transactions, bankworker.ledger_accounts,
  bankworker.journal_entries, bankworker.journal_lines TO bankworker_app;
