-- A claim whose answer was lost (issue #18). The claim commits, then the connection dies before
-- its rows reach the worker (a failover at that moment, or a commit the server acknowledged
-- without its synchronous standby): the jobs are leased to a worker that does not know them, and
-- only the rescue at lease expiry would put them back, with an attempt counted against each. The
-- worker calls this before its next claim, naming every job it does hold: the rest of its leases
-- cannot be running anywhere, and go back at once with their attempt uncounted, as release_jobs
-- gives back jobs a worker will not finish. The worker's claims are one at a time, so no claim of
-- its own is in flight when it runs.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.release_unknown_jobs(p_owner uuid, p_tenants uuid[], p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  released integer;
BEGIN
  -- As release_jobs: a job whose unique key has a waiting twin is cancelled rather than doubled.
  UPDATE bankworker.jobs j
     SET state = CASE
                   WHEN j.unique_key IS NOT NULL AND EXISTS (
                          SELECT 1 FROM bankworker.jobs w
                           WHERE w.tenant_id = j.tenant_id AND w.unique_key = j.unique_key
                             AND w.state IN ('available', 'retryable')) THEN 'cancelled'
                   ELSE 'available'
                 END,
         finished_at = CASE
                         WHEN j.unique_key IS NOT NULL AND EXISTS (
                                SELECT 1 FROM bankworker.jobs w
                                 WHERE w.tenant_id = j.tenant_id AND w.unique_key = j.unique_key
                                   AND w.state IN ('available', 'retryable')) THEN now()
                       END,
         attempt = greatest(j.attempt - 1, 0), run_at = now(), lease_owner = NULL, lease_expires_at = NULL
   WHERE j.state = 'running' AND j.lease_owner = p_owner
     AND NOT EXISTS (SELECT 1 FROM unnest(p_tenants, p_ids) AS i(tenant_id, job_id)
                      WHERE i.tenant_id = j.tenant_id AND i.job_id = j.job_id);
  GET DIAGNOSTICS released = ROW_COUNT;
  RETURN released;
END
$$;

REVOKE ALL ON FUNCTION bankworker.release_unknown_jobs(uuid, uuid[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.release_unknown_jobs(uuid, uuid[], bigint[]) TO bankworker_worker;
