-- Counts for the operators' gauges (issue 20): jobs by kind and state, connections by status, the
-- unposted inbox. Each worker reads all three every few seconds (worker/database_gauges.hpp), in
-- one round trip, never per scrape. They are counts across tenants, so each function turns the
-- cross-tenant gate on for its own statement only, like revoking_connections (0026), and returns
-- nothing but counts and ages: never a tenant, an id or a payload.
--
-- Cheap by construction: each reads only the rows a partial index keeps (jobs not finished or
-- dead, events not yet posted), never the succeeded jobs or the posted events, which are most of
-- each table. Connections are few (one per linked bank item).
SET LOCAL ROLE bankworker_owner;

-- Dead jobs (state 'failed') stay until dead_retention; succeeded and cancelled ones are left out.
CREATE INDEX jobs_by_kind_state ON bankworker.jobs (kind, state, run_at)
  WHERE state IN ('available', 'running', 'retryable', 'failed');
CREATE INDEX stripe_events_unposted ON bankworker.stripe_events (received_at) WHERE state = 'received';

-- Jobs by kind and state: available (due now), scheduled (waiting for run_at, first attempt or
-- retry), running, retryable (a retry that is due), dead (failed, no attempt left or never to be
-- retried); with the age in seconds of the kind's oldest job that is due and not running.
CREATE FUNCTION bankworker.job_gauges(p_limit integer)
RETURNS TABLE (kind text, state text, jobs bigint, oldest_due_s bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := now();
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION 'job_gauges: limit 1..1000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT g.kind, g.gauge_state, count(*),
           coalesce(greatest(0, floor(extract(epoch FROM t_now - min(g.run_at)
             FILTER (WHERE g.gauge_state IN ('available', 'retryable')))))::bigint, 0)
      FROM (SELECT j.kind, j.run_at,
                   CASE WHEN j.state = 'failed' THEN 'dead'
                        WHEN j.state IN ('available', 'retryable') AND j.run_at > t_now THEN 'scheduled'
                        ELSE j.state END AS gauge_state
              FROM bankworker.jobs j
             WHERE j.state IN ('available', 'running', 'retryable', 'failed')) g
     GROUP BY g.kind, g.gauge_state
     ORDER BY g.kind, g.gauge_state
     LIMIT p_limit;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

-- Connections by status, with every status present (zero when none).
CREATE FUNCTION bankworker.connection_gauges()
RETURNS TABLE (status text, connections bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
#variable_conflict use_column
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT s.status, count(c.status)
      FROM unnest(ARRAY['linking', 'active', 'needs_reauth', 'broken', 'revoking', 'revoked']) AS s(status)
      LEFT JOIN bankworker.connections c ON c.status = s.status
     GROUP BY s.status
     ORDER BY s.status;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

-- The inbox had no cross-tenant policy: nothing before needed to look across tenants' events.
-- SELECT only, and only inbox_gauges turns the gate on, for its one count.
CREATE POLICY cross_tenant_machinery ON bankworker.stripe_events FOR SELECT TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on');

-- Stripe events received but not yet posted (nor ignored or failed), and the oldest one's age.
CREATE FUNCTION bankworker.inbox_gauges()
RETURNS TABLE (events bigint, oldest_s bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT count(*), coalesce(greatest(0, floor(extract(epoch FROM now() - min(e.received_at))))::bigint, 0)
      FROM bankworker.stripe_events e
     WHERE e.state = 'received';
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

REVOKE ALL ON FUNCTION bankworker.job_gauges(integer), bankworker.connection_gauges(),
  bankworker.inbox_gauges() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.job_gauges(integer), bankworker.connection_gauges(),
  bankworker.inbox_gauges() TO bankworker_worker;
