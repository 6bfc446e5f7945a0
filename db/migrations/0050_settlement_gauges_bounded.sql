-- The awaiting-settlement gauges cost what the gauges' refresh can afford, however many events
-- wait (#21).
--
-- stripe_settlement_gauges (0043) counted every awaiting event and took the oldest one's time from
-- all of them, on every gauge refresh (each 5 s). Events wait as long as their tenant has no
-- Stripe API key and the webhooks do not carry the balance transaction, so for such a tenant the
-- awaiting set only grows: under webhook_load (every event awaits) the count read 160,000 rows in
-- 230 ms per refresh at the end of a 30 s run, about 10 us of PostgreSQL per stored event
-- (pg_stat_statements), and it keeps growing with the set.
--
-- Now:
--   events    counts at most 10,000 (settlement_gauge_count_max in settlement_marks.hpp): 10000
--             reads "10,000 or more". An operator needs to know that settlements are missing and
--             roughly how many; the exact list is `stripe events list --awaiting-settlement`.
--   oldest_s  stays exact: the oldest awaiting event of each tenant is the first entry of that
--             tenant in stripe_events_settlement_awaited (tenant_id, settlement_awaited_since), so
--             the function walks the index tenant by tenant (one descent per tenant that has
--             awaiting events) instead of reading every row.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.stripe_settlement_gauges()
RETURNS TABLE (events bigint, oldest_s bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
-- A count that stops at 10,000 rows gains nothing from parallel workers, whose start-up alone took
-- 15 ms here.
SET max_parallel_workers_per_gather = 0 AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    WITH RECURSIVE oldest(tenant_id, since) AS (
      (SELECT e.tenant_id, e.settlement_awaited_since FROM bankworker.stripe_events e
        WHERE e.settlement_awaited_since IS NOT NULL
        ORDER BY e.tenant_id, e.settlement_awaited_since LIMIT 1)
      UNION ALL
      SELECT n.tenant_id, n.since
        FROM oldest o
        CROSS JOIN LATERAL (SELECT e.tenant_id, e.settlement_awaited_since AS since FROM bankworker.stripe_events e
                             WHERE e.settlement_awaited_since IS NOT NULL AND e.tenant_id > o.tenant_id
                             ORDER BY e.tenant_id, e.settlement_awaited_since LIMIT 1) n)
    SELECT (SELECT count(*) FROM (SELECT FROM bankworker.stripe_events e
                                   WHERE e.settlement_awaited_since IS NOT NULL LIMIT 10000) capped),
           (SELECT coalesce(greatest(0, floor(extract(epoch FROM now() - min(o.since))))::bigint, 0) FROM oldest o);
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;
