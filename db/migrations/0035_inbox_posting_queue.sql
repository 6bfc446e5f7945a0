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
