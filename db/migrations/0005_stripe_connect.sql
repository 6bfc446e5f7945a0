-- Stripe Connect routing and the unrouted inbox.
--
-- The platform endpoint (POST /webhooks/stripe) receives events for connected accounts; each
-- account maps to one tenant. An event whose account is not mapped yet is kept, verified, in
-- stripe_unrouted_events (no tenant is known, so it cannot be tenant data) and moved into the
-- tenant's inbox when `bankworker stripe connect` maps the account: nothing is dropped.
SET LOCAL ROLE bankworker_owner;

CREATE TABLE bankworker.stripe_accounts (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  account text NOT NULL CHECK (account ~ '^acct_[A-Za-z0-9]{1,64}$'),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, account),
  UNIQUE (account)
);
CALL bankworker.enable_tenant_rls('bankworker.stripe_accounts');
GRANT SELECT, INSERT, DELETE ON bankworker.stripe_accounts TO bankworker_worker;

-- Which tenant a connected account belongs to. Routing happens before any tenant is known, so it
-- reads across tenants; it returns one id and nothing else.
CREATE FUNCTION bankworker.stripe_account_tenant(account_id text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT tenant_id FROM bankworker.stripe_accounts WHERE account = account_id
$$;
REVOKE ALL ON FUNCTION bankworker.stripe_account_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.stripe_account_tenant(text) TO bankworker_worker;

CREATE TABLE bankworker.stripe_unrouted_events (
  event_id text PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 256),
  account text NOT NULL CHECK (length(account) <= 256),
  type text NOT NULL CHECK (length(type) <= 256),
  livemode boolean NOT NULL,
  created_at timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  body jsonb NOT NULL
);
CREATE INDEX stripe_unrouted_events_account ON bankworker.stripe_unrouted_events (account);
GRANT SELECT, INSERT, DELETE ON bankworker.stripe_unrouted_events TO bankworker_worker;
