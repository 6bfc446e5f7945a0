-- A payout's expected arrival day and statement descriptor reach reconciliation (issue #19).
--
-- Journal entries get `metadata`: facts about the money object that are not lines (a JSON object
-- of strings, written by ledger::post_entries from ledger::entry::metadata). The Stripe planner
-- puts a payout's `arrival_date` (unix seconds) and `statement_descriptor` on its `po_…:payout`
-- entry, and the payout trigger of 0034 now takes the expected day from arrival_date (the entry's
-- occurred_at, the event's date, only when Stripe sent none) and the descriptor from
-- statement_descriptor, which the matcher ranks candidates by.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.journal_entries ADD COLUMN metadata jsonb
  CHECK (metadata IS NULL OR (jsonb_typeof(metadata) = 'object' AND octet_length(metadata::text) <= 4096));

-- The expected day from a metadata arrival_date, or NULL when there is none or it is not a unix
-- time in range (the planner refuses those; this keeps a hand-made entry from failing a posting).
CREATE FUNCTION bankworker.payout_arrival_day(p_metadata jsonb) RETURNS date
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN p_metadata->>'arrival_date' ~ '^[0-9]{1,12}$' THEN
           CASE WHEN (p_metadata->>'arrival_date')::bigint <= 253402300799
                THEN (to_timestamp((p_metadata->>'arrival_date')::bigint) AT TIME ZONE 'UTC')::date END END
$$;

-- In the shape 0035 gave it (one pass over the new lines, one primary-key probe per entry, the
-- payout statements planned when they run): only the expected day and the descriptor change.
CREATE OR REPLACE FUNCTION bankworker.note_payout_lines() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  tenants uuid[];
  entries uuid[];
  payouts uuid[];
BEGIN
  SELECT array_agg(DISTINCT l.tenant_id), array_agg(DISTINCT l.entry_id) INTO tenants, entries FROM changed l;
  IF entries IS NULL THEN
    RETURN NULL;
  END IF;
  EXECUTE 'SELECT array_agg(e.entry_id) FROM bankworker.journal_entries e'
          ' WHERE e.tenant_id = ANY($1) AND e.entry_id = ANY($2)'
          '   AND (e.idempotency_key LIKE ''%:payout'' OR e.idempotency_key LIKE ''%:payout_failed'')'
     INTO payouts USING tenants, entries;
  IF payouts IS NULL THEN
    RETURN NULL;
  END IF;
  EXECUTE 'INSERT INTO bankworker.reconcile_payouts (tenant_id, payout_id, entry_id, ledger_account, amount_minor,'
          '                                          currency, expected_on, descriptor)'
          ' SELECT l.tenant_id, left(e.idempotency_key, -7), l.entry_id, l.account_code, l.amount_minor, l.currency,'
          '        coalesce(bankworker.payout_arrival_day(e.metadata), (e.occurred_at AT TIME ZONE ''UTC'')::date),'
          '        nullif(left(e.metadata->>''statement_descriptor'', 256), '''')'
          '   FROM bankworker.journal_entries e'
          '   JOIN bankworker.journal_lines l ON l.tenant_id = e.tenant_id AND l.entry_id = e.entry_id'
          '  WHERE e.tenant_id = ANY($1) AND e.entry_id = ANY($2) AND e.idempotency_key LIKE ''%:payout'''
          '    AND l.amount_minor > 0'
          ' ON CONFLICT (tenant_id, payout_id) DO NOTHING'
    USING tenants, payouts;
  EXECUTE 'UPDATE bankworker.reconcile_payouts p SET failed = true'
          '   FROM bankworker.journal_entries e'
          '   JOIN bankworker.journal_lines l ON l.tenant_id = e.tenant_id AND l.entry_id = e.entry_id'
          '  WHERE e.tenant_id = ANY($1) AND e.entry_id = ANY($2) AND e.idempotency_key LIKE ''%:payout_failed'''
          '    AND l.amount_minor < 0 AND p.tenant_id = l.tenant_id AND p.payout_id = left(e.idempotency_key, -14)'
          '    AND NOT p.failed'
    USING tenants, payouts;
  PERFORM bankworker.enqueue_reconcile(tenants);
  RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION bankworker.payout_arrival_day(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.payout_arrival_day(jsonb) TO bankworker_worker;
