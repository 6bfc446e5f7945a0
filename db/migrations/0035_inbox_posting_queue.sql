-- The Stripe inbox is the posting queue (issue 21). An event no longer brings a stripe.post job
-- row with it: posters (connectors/stripe/poster.cpp) claim a tenant's unposted events straight
-- from bankworker.stripe_events, oldest first, with FOR UPDATE SKIP LOCKED, post them and mark
-- them in the same transaction.
--
-- What a job row gave each event, the event row now keeps itself:
--   attempts      postings of this event that failed (a posting that succeeds does not count);
--   available_at  when a failed posting may be tried again (backoff); null: at once;
--   last_error    why the last posting failed (no secret: the posting rules' own words).
-- States: received (waiting for a poster), fetching (handed to a stripe.post job because its
-- posting needs the Stripe API: a network call is worth a job's lease and retries), posted,
-- ignored, failed (dead-lettered: its attempts ran out, or it needs an operator;
-- `bankworker stripe events retry` sets it back to received).
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.stripe_events
  ADD COLUMN attempts integer NOT NULL DEFAULT 0 CONSTRAINT stripe_events_attempts_check CHECK (attempts >= 0),
  ADD COLUMN available_at timestamptz,
  ADD COLUMN last_error text CONSTRAINT stripe_events_last_error_check CHECK (length(last_error) <= 2000);

ALTER TABLE bankworker.stripe_events DROP CONSTRAINT stripe_events_state_check;
ALTER TABLE bankworker.stripe_events ADD CONSTRAINT stripe_events_state_check
  CHECK (state IN ('received', 'fetching', 'posted', 'ignored', 'failed'));

-- The posters' index: per tenant, the unposted events in arrival order. It holds only events not
-- yet posted, so it stays as small as the backlog however large the inbox grows. The gauges and
-- the failed-events list read it too.
DROP INDEX bankworker.stripe_events_unposted;
CREATE INDEX stripe_events_unposted ON bankworker.stripe_events (tenant_id, received_at)
  WHERE state IN ('received', 'fetching');
CREATE INDEX stripe_events_failed ON bankworker.stripe_events (tenant_id, received_at) WHERE state = 'failed';

-- Tenants with events waiting for a poster, in tenant order after `p_after` (null: from the
-- first), at most p_limit. A skip scan of the index above: one probe per tenant, whatever the
-- backlog. The posters walk the tenants round robin with it, so one tenant's backlog cannot
-- starve another's. Returns tenant ids only, like the gauges return counts only.
CREATE FUNCTION bankworker.stripe_ready_tenants(p_after uuid, p_limit integer)
RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION 'stripe_ready_tenants: limit 1..1000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    WITH RECURSIVE ready(tenant_id) AS (
      (SELECT e.tenant_id FROM bankworker.stripe_events e
        WHERE e.state IN ('received', 'fetching') AND e.state = 'received'
          AND (p_after IS NULL OR e.tenant_id > p_after)
        ORDER BY e.tenant_id LIMIT 1)
      UNION ALL
      SELECT (SELECT e.tenant_id FROM bankworker.stripe_events e
               WHERE e.state IN ('received', 'fetching') AND e.state = 'received' AND e.tenant_id > r.tenant_id
               ORDER BY e.tenant_id LIMIT 1)
        FROM ready r WHERE r.tenant_id IS NOT NULL)
    SELECT r.tenant_id FROM ready r WHERE r.tenant_id IS NOT NULL LIMIT p_limit;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

-- The inbox gauges gain the dead-lettered events: received or handed to a job but not posted
-- (events, oldest_s) as before, and failed ones (failed).
DROP FUNCTION bankworker.inbox_gauges();
CREATE FUNCTION bankworker.inbox_gauges()
RETURNS TABLE (events bigint, oldest_s bigint, failed bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT (SELECT count(*) FROM bankworker.stripe_events e WHERE e.state IN ('received', 'fetching')),
           (SELECT coalesce(greatest(0, floor(extract(epoch FROM now() - min(e.received_at))))::bigint, 0)
              FROM bankworker.stripe_events e WHERE e.state IN ('received', 'fetching')),
           (SELECT count(*) FROM bankworker.stripe_events e WHERE e.state = 'failed');
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

REVOKE ALL ON FUNCTION bankworker.stripe_ready_tenants(uuid, integer), bankworker.inbox_gauges() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.stripe_ready_tenants(uuid, integer), bankworker.inbox_gauges()
  TO bankworker_worker;

-- The payout trigger on journal lines (0034), rewritten. Its three statements joined the
-- statement's new lines with journal_entries; PL/pgSQL plans such a statement once per session,
-- when the ledger is small, and that plan (seen with auto_explain under bench/webhook_load) was a
-- nested loop rescanning every entry of the tenant for each new line: 512 lines × the tenant's
-- whole journal per posting batch, 0.3–1.3 s per batch after 20,000 events and growing without
-- bound. Now one pass over the new lines gathers their entry ids, one primary-key probe per entry
-- finds the payouts among them, and a statement with no payout stops there (nearly all of them).
-- The statements that run only for payouts are planned when they run (EXECUTE), so their plans
-- follow the table as it grows; they read the payout entries' lines, all of which this statement
-- inserted (an entry's lines are inserted with it; a payout posted before is not in `changed`).
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
          '                                          currency, expected_on)'
          ' SELECT l.tenant_id, left(e.idempotency_key, -7), l.entry_id, l.account_code, l.amount_minor, l.currency,'
          '        (e.occurred_at AT TIME ZONE ''UTC'')::date'
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
