-- Reconciliation of payouts with bank deposits (issue #19). The matching rules live in
-- ledger/reconcile.cpp; this migration holds their tables and the triggers that make matching run
-- when either side arrives, in whichever order:
--
--   reconcile_accounts  which bank account (Plaid account id) holds a ledger bank account's money,
--                       and the amount tolerance under which a deposit is `short`, not unmatched;
--   reconcile_payouts   one row per payout posted to the ledger (an entry keyed `po_…:payout`,
--                       DESIGN.md §1), its status and the bank transaction it matched.
--
-- A payout row is written by a trigger on journal_lines, so no posting code changes: the entry's
-- debit line names the ledger account the money went to, its occurred_at the expected arrival day.
-- A `po_…:payout_failed` entry marks the payout failed. Both triggers (lines, bank transactions)
-- enqueue one `reconcile.match` job per tenant under one unique key, so a burst of rows makes one
-- job, and only for a tenant that has mapped a bank account (no mapping: nothing to match against).
SET LOCAL ROLE bankworker_owner;

CREATE TABLE bankworker.reconcile_accounts (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants (tenant_id),
  plaid_account_id text COLLATE "C" NOT NULL CHECK (length(plaid_account_id) BETWEEN 1 AND 256),
  ledger_account text NOT NULL,
  -- A deposit whose amount differs from the payout's by less than this (minor units) is `short`.
  tolerance_minor bigint NOT NULL DEFAULT 0 CHECK (tolerance_minor BETWEEN 0 AND 1000000000),
  mapped_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, plaid_account_id),
  FOREIGN KEY (tenant_id, ledger_account) REFERENCES bankworker.ledger_accounts (tenant_id, code)
);
CREATE INDEX reconcile_accounts_ledger ON bankworker.reconcile_accounts (tenant_id, ledger_account);
CALL bankworker.enable_tenant_rls('bankworker.reconcile_accounts');

CREATE TABLE bankworker.reconcile_payouts (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants (tenant_id),
  payout_id text COLLATE "C" NOT NULL CHECK (length(payout_id) BETWEEN 1 AND 249),
  entry_id uuid NOT NULL,
  ledger_account text NOT NULL,
  amount_minor bigint NOT NULL CHECK (amount_minor > 0),
  currency text NOT NULL,
  expected_on date NOT NULL,
  -- The payout's statement descriptor when a poster knows it (NULL: only STRIPE and the id count).
  descriptor text CHECK (length(descriptor) <= 256),
  failed boolean NOT NULL DEFAULT false,
  status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'matched', 'short', 'missing', 'review', 'conflict', 'failed')),
  transaction_id text COLLATE "C",
  difference_minor bigint NOT NULL DEFAULT 0,
  -- Why a payout is in review: a tie between candidates (re-decided on each run) or its matched
  -- transaction was removed by the bank (stays until a person acts).
  review_reason text CHECK (review_reason IN ('tie', 'removed')),
  candidates text[] NOT NULL DEFAULT '{}' CHECK (cardinality(candidates) <= 16),
  reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 1024),
  decided_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, payout_id),
  FOREIGN KEY (tenant_id, entry_id) REFERENCES bankworker.journal_entries (tenant_id, entry_id),
  CHECK ((status IN ('matched', 'short', 'conflict')) = (transaction_id IS NOT NULL)),
  CHECK ((status = 'review') = (review_reason IS NOT NULL))
);
-- One deposit settles one payout, whatever the matcher believes.
CREATE UNIQUE INDEX reconcile_payouts_one_per_deposit ON bankworker.reconcile_payouts (tenant_id, transaction_id)
  WHERE transaction_id IS NOT NULL;
-- The matcher's and the gauges' work list: everything not settled for good.
CREATE INDEX reconcile_payouts_open ON bankworker.reconcile_payouts (tenant_id, status, expected_on)
  WHERE status IN ('pending', 'missing', 'review', 'short', 'conflict');
CALL bankworker.enable_tenant_rls('bankworker.reconcile_payouts');
-- The gauges and the missing-payout schedule count across tenants, through the owner's functions.
CREATE POLICY cross_tenant_machinery ON bankworker.reconcile_payouts FOR SELECT TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on');
-- The app reads its tenant's reconciliation as it reads its ledger.
CREATE POLICY app_scope ON bankworker.reconcile_payouts FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));
CREATE POLICY app_scope ON bankworker.reconcile_accounts FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));

-- One reconcile.match job for each of `tenants` that has mapped a bank account.
CREATE FUNCTION bankworker.enqueue_reconcile(p_tenants uuid[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  wanted uuid[];
BEGIN
  SELECT array_agg(DISTINCT t.id) INTO wanted
    FROM unnest(p_tenants) AS t(id)
   WHERE EXISTS (SELECT 1 FROM bankworker.reconcile_accounts m WHERE m.tenant_id = t.id);
  IF wanted IS NULL THEN
    RETURN;
  END IF;
  PERFORM bankworker.enqueue_jobs(wanted, array_fill('reconcile.match'::text, ARRAY[cardinality(wanted)]),
                                  array_fill('{}'::jsonb, ARRAY[cardinality(wanted)]),
                                  array_fill(100::smallint, ARRAY[cardinality(wanted)]),
                                  array_fill(NULL::timestamptz, ARRAY[cardinality(wanted)]),
                                  array_fill('reconcile.match'::text, ARRAY[cardinality(wanted)]),
                                  array_fill(NULL::uuid, ARRAY[cardinality(wanted)]),
                                  array_fill(25, ARRAY[cardinality(wanted)]));
END
$$;

-- Payout entries posted in this statement become payouts to reconcile.
CREATE FUNCTION bankworker.note_payout_lines() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO bankworker.reconcile_payouts (tenant_id, payout_id, entry_id, ledger_account, amount_minor, currency,
                                            expected_on)
  SELECT l.tenant_id, left(e.idempotency_key, -7), l.entry_id, l.account_code, l.amount_minor, l.currency,
         (e.occurred_at AT TIME ZONE 'UTC')::date
    FROM changed l
    JOIN bankworker.journal_entries e ON e.tenant_id = l.tenant_id AND e.entry_id = l.entry_id
   WHERE e.idempotency_key LIKE '%:payout' AND l.amount_minor > 0
  ON CONFLICT (tenant_id, payout_id) DO NOTHING;
  UPDATE bankworker.reconcile_payouts p SET failed = true
    FROM changed l
    JOIN bankworker.journal_entries e ON e.tenant_id = l.tenant_id AND e.entry_id = l.entry_id
   WHERE e.idempotency_key LIKE '%:payout_failed' AND l.amount_minor < 0
     AND p.tenant_id = l.tenant_id AND p.payout_id = left(e.idempotency_key, -14) AND NOT p.failed;
  PERFORM bankworker.enqueue_reconcile(array_agg(DISTINCT l.tenant_id))
     FROM changed l
     JOIN bankworker.journal_entries e ON e.tenant_id = l.tenant_id AND e.entry_id = l.entry_id
    WHERE e.idempotency_key LIKE '%:payout' OR e.idempotency_key LIKE '%:payout_failed'
   HAVING count(*) > 0;
  RETURN NULL;
END
$$;
CREATE TRIGGER journal_lines_payouts AFTER INSERT ON bankworker.journal_lines
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.note_payout_lines();

-- Bank rows added, changed or removed (removal is an UPDATE: a tombstone) in a mapped account.
CREATE FUNCTION bankworker.note_bank_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM bankworker.enqueue_reconcile(array_agg(DISTINCT c.tenant_id))
     FROM changed c
    WHERE EXISTS (SELECT 1 FROM bankworker.reconcile_accounts m
                   WHERE m.tenant_id = c.tenant_id AND m.plaid_account_id = c.account_id)
   HAVING count(*) > 0;
  RETURN NULL;
END
$$;
CREATE TRIGGER transactions_reconcile_insert AFTER INSERT ON bankworker.transactions
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.note_bank_rows();
CREATE TRIGGER transactions_reconcile_update AFTER UPDATE ON bankworker.transactions
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.note_bank_rows();

-- The scheduled pass: a reconcile.match job for each tenant with an unmatched payout whose window
-- may have closed (4 business days take at least 4 calendar days; the matcher decides exactly).
CREATE FUNCTION bankworker.schedule_reconcile_overdue(p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
  due uuid[];
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
    RAISE EXCEPTION 'schedule_reconcile_overdue: limit 1..10000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  SELECT array_agg(t.tenant_id) INTO due FROM (
    SELECT DISTINCT p.tenant_id FROM bankworker.reconcile_payouts p
     WHERE p.status = 'pending' AND p.expected_on < (coalesce(p_now, now()) AT TIME ZONE 'UTC')::date - 4
     LIMIT p_limit) t;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
  IF due IS NULL THEN
    RETURN 0;
  END IF;
  PERFORM bankworker.enqueue_jobs(due, array_fill('reconcile.match'::text, ARRAY[cardinality(due)]),
                                  array_fill('{}'::jsonb, ARRAY[cardinality(due)]),
                                  array_fill(100::smallint, ARRAY[cardinality(due)]),
                                  array_fill(NULL::timestamptz, ARRAY[cardinality(due)]),
                                  array_fill('reconcile.match'::text, ARRAY[cardinality(due)]),
                                  array_fill(NULL::uuid, ARRAY[cardinality(due)]),
                                  array_fill(25, ARRAY[cardinality(due)]));
  RETURN cardinality(due);
END
$$;

-- Payouts by status across tenants (not `matched` nor `failed`: those are settled), and the
-- oldest open payout's expected day in days before today.
CREATE FUNCTION bankworker.reconcile_gauges() RETURNS TABLE (status text, payouts bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT p.status, count(*) FROM bankworker.reconcile_payouts p
     WHERE p.status IN ('pending', 'missing', 'review', 'short', 'conflict')
     GROUP BY p.status ORDER BY p.status;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

REVOKE ALL ON FUNCTION bankworker.enqueue_reconcile(uuid[]), bankworker.note_payout_lines(),
  bankworker.note_bank_rows(), bankworker.schedule_reconcile_overdue(timestamptz, integer),
  bankworker.reconcile_gauges() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.enqueue_reconcile(uuid[]), bankworker.note_payout_lines(),
  bankworker.note_bank_rows(), bankworker.schedule_reconcile_overdue(timestamptz, integer),
  bankworker.reconcile_gauges() TO bankworker_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON bankworker.reconcile_accounts TO bankworker_worker;
GRANT SELECT, INSERT, UPDATE ON bankworker.reconcile_payouts TO bankworker_worker;
GRANT SELECT ON bankworker.reconcile_accounts, bankworker.reconcile_payouts TO bankworker_app;

-- A removed bank row is followed to its posted successor by pending_transaction_id, and matched
-- payouts are looked at by expected day: both through an index, never a scan per payout.
CREATE INDEX transactions_pending_transaction ON bankworker.transactions (tenant_id, pending_transaction_id)
  WHERE pending_transaction_id IS NOT NULL;
CREATE INDEX reconcile_payouts_matched ON bankworker.reconcile_payouts (tenant_id, expected_on)
  WHERE transaction_id IS NOT NULL;
