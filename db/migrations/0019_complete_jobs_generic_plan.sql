-- Small batch completions plan once per session instead of on every call.
--
-- complete_jobs planned its set-based statement afresh on every call (force_custom_plan), for
-- batches of any size. Under webhook_load, where group posting completes a few jobs at a time, it
-- took 1.7 ms a call for 2,369 calls in 15 s (pg_stat_user_functions), most of it planning; a
-- loop of 200 completions of 4 jobs took 415-456 ms in psql, and takes 66-69 ms with this
-- version.
--
-- That statement could not simply keep a cached plan: its update named the lease owner, so
-- jobs_running (lease_owner) was a way into the table, and a generic plan, or a custom one made
-- while the statistics show few running jobs, nests the input array inside a scan of all of the
-- owner's running jobs (0.6 s for 1,000 jobs, measured). Batches of up to 256 jobs now find each
-- job by primary key and lock it, check the lease on the locked version, and update by primary
-- key, so every join is a probe by key and the plan is generic, with hash and merge joins off as
-- in claim_jobs (0008). Larger batches keep the set-based statement of 0016, now in
-- complete_jobs_many: its planning is paid once for many jobs, and the explicit row locks of the
-- small path cost more than that per job (queue_bench with batches of about 900, interleaved:
-- 21,200-22,900 jobs/s with the set-based statement, 18,800-21,100 with the small path for all).
-- A single job takes the small path too: 0016 gave it statements of its own only to avoid the
-- planning that the small path no longer does. Tenants, ids and outcomes must now have equal
-- lengths (the worker always sends them so); unequal ones used to be padded with nulls.
SET LOCAL ROLE bankworker_owner;

-- The set-based completion of 0016 for batches of more than 256 jobs, planned on every call with
-- the actual arrays (force_custom_plan) and free to hash-join them (complete_jobs, its only caller,
-- turns hash and merge joins off for itself, so they are turned on again here).
CREATE FUNCTION bankworker.complete_jobs_many(p_owner uuid, p_tenants uuid[], p_ids bigint[], p_outcomes text[],
                                              p_delays_ms bigint[], p_errors text[], t_now timestamptz)
RETURNS TABLE (tenant_id uuid, job_id bigint, state text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan
SET enable_hashjoin = on SET enable_mergejoin = on AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
    WITH input AS (
      SELECT * FROM unnest(p_tenants, p_ids, p_outcomes, p_delays_ms, p_errors)
        AS i(tenant_id, job_id, outcome, delay_ms, error)
    ),
    decided AS (
      SELECT i.tenant_id, i.job_id, i.outcome, greatest(coalesce(i.delay_ms, 0), 0) AS delay_ms,
             left(i.error, 2048) AS error,
             CASE
               WHEN i.outcome = 'done' THEN 'succeeded'
               WHEN i.outcome IN ('needs_user_action', 'permanent') THEN 'failed'
               WHEN j.attempt >= j.attempts_max THEN 'failed'
               WHEN j.unique_key IS NOT NULL AND EXISTS (
                      SELECT 1 FROM bankworker.jobs w
                       WHERE w.tenant_id = j.tenant_id AND w.unique_key = j.unique_key
                         AND w.state IN ('available', 'retryable')) THEN 'cancelled'
               ELSE 'retryable'
             END AS new_state
        FROM input i JOIN bankworker.jobs j ON j.tenant_id = i.tenant_id AND j.job_id = i.job_id
    ),
    updated AS (
      UPDATE bankworker.jobs j
         SET state = d.new_state,
             run_at = CASE WHEN d.new_state = 'retryable' THEN t_now + d.delay_ms * interval '1 millisecond' ELSE j.run_at END,
             finished_at = CASE WHEN d.new_state = 'retryable' THEN NULL ELSE t_now END,
             failure = CASE
                         WHEN d.new_state <> 'failed' THEN NULL
                         WHEN d.outcome IN ('needs_user_action', 'permanent') THEN d.outcome
                         ELSE 'attempts_exhausted'
                       END,
             last_error = CASE WHEN d.outcome = 'done' THEN j.last_error ELSE d.error END,
             in_doubt = (d.outcome = 'in_doubt'),
             lease_owner = NULL, lease_expires_at = NULL
        FROM decided d
       WHERE j.tenant_id = d.tenant_id AND j.job_id = d.job_id AND j.state = 'running' AND j.lease_owner = p_owner
      RETURNING j.tenant_id, j.job_id, j.state)
    SELECT * FROM updated;
END
$$;
REVOKE ALL ON FUNCTION bankworker.complete_jobs_many(uuid, uuid[], bigint[], text[], bigint[], text[], timestamptz)
  FROM PUBLIC;

CREATE OR REPLACE FUNCTION bankworker.complete_jobs(p_owner uuid, p_tenants uuid[], p_ids bigint[], p_outcomes text[],
                                         p_delays_ms bigint[], p_errors text[], p_now timestamptz)
RETURNS TABLE (tenant_id uuid, job_id bigint, state text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
SET plan_cache_mode = force_generic_plan SET enable_hashjoin = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(p_outcomes) AS o(v)
              WHERE o.v IS NULL OR o.v NOT IN ('done', 'retry', 'in_doubt', 'needs_user_action', 'permanent')) THEN
    RAISE EXCEPTION 'complete_jobs: unknown outcome' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(cardinality(p_tenants), 0) <> coalesce(cardinality(p_ids), 0)
     OR coalesce(cardinality(p_outcomes), 0) <> coalesce(cardinality(p_ids), 0) THEN
    RAISE EXCEPTION 'complete_jobs: tenants, ids and outcomes differ in length' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF cardinality(p_ids) > 256 THEN
    RETURN QUERY SELECT m.tenant_id, m.job_id, m.state
                   FROM bankworker.complete_jobs_many(p_owner, p_tenants, p_ids, p_outcomes, p_delays_ms, p_errors,
                                                      t_now) m;
    RETURN;
  END IF;
  -- Up to 256 jobs, one included. Each row is first found by primary key and locked, in key order
  -- (two completions that share jobs, which only a rescue can cause, then wait for each other
  -- instead of deadlocking). Its lease is checked on the locked, current version: a job another owner holds
  -- now, or that is no longer running, is left alone. Nothing can change a locked row before this
  -- transaction ends, so the update goes by primary key alone.
  --
  -- The lease is deliberately not a condition of the update or of the lookup: jobs_running
  -- (lease_owner) would then be a way into the table, and with few running jobs in its statistics
  -- the planner nests the input array inside a scan of all of this owner's running jobs, which is
  -- quadratic in the batch (0.6 s for 1,000 jobs, measured). Every join below is a probe by key, so
  -- the plan is generic (made once per session; it was planned on every call before, about 1.7 ms
  -- of each batch completion under webhook_load), with hash and merge joins off as in claim_jobs.
  RETURN QUERY
    WITH held AS MATERIALIZED (
      SELECT i.tenant_id, i.job_id, i.outcome, greatest(coalesce(i.delay_ms, 0), 0) AS delay_ms,
             left(i.error, 2048) AS error, j.attempt, j.attempts_max, j.unique_key, j.state, j.lease_owner
        FROM (SELECT u.tenant_id, u.job_id, u.outcome, u.delay_ms, u.error
                FROM unnest(p_tenants, p_ids, p_outcomes, p_delays_ms, p_errors)
                  AS u(tenant_id, job_id, outcome, delay_ms, error)
               ORDER BY u.tenant_id, u.job_id) i
        CROSS JOIN LATERAL (
          SELECT j.attempt, j.attempts_max, j.unique_key, j.state, j.lease_owner
            FROM bankworker.jobs j
           WHERE j.tenant_id = i.tenant_id AND j.job_id = i.job_id
             FOR NO KEY UPDATE) j
    ),
    decided AS MATERIALIZED (
      SELECT h.tenant_id, h.job_id, h.outcome, h.delay_ms, h.error,
             CASE
               WHEN h.outcome = 'done' THEN 'succeeded'
               WHEN h.outcome IN ('needs_user_action', 'permanent') THEN 'failed'
               WHEN h.attempt >= h.attempts_max THEN 'failed'
               WHEN h.unique_key IS NOT NULL AND EXISTS (
                      SELECT 1 FROM bankworker.jobs w
                       WHERE w.tenant_id = h.tenant_id AND w.unique_key = h.unique_key
                         AND w.state IN ('available', 'retryable')) THEN 'cancelled'
               ELSE 'retryable'
             END AS new_state
        FROM held h
       WHERE h.state = 'running' AND h.lease_owner = p_owner
    ),
    updated AS (
      UPDATE bankworker.jobs j
         SET state = d.new_state,
             run_at = CASE WHEN d.new_state = 'retryable' THEN t_now + d.delay_ms * interval '1 millisecond' ELSE j.run_at END,
             finished_at = CASE WHEN d.new_state = 'retryable' THEN NULL ELSE t_now END,
             failure = CASE
                         WHEN d.new_state <> 'failed' THEN NULL
                         WHEN d.outcome IN ('needs_user_action', 'permanent') THEN d.outcome
                         ELSE 'attempts_exhausted'
                       END,
             last_error = CASE WHEN d.outcome = 'done' THEN j.last_error ELSE d.error END,
             in_doubt = (d.outcome = 'in_doubt'),
             lease_owner = NULL, lease_expires_at = NULL
        FROM decided d
       WHERE j.tenant_id = d.tenant_id AND j.job_id = d.job_id
      RETURNING j.tenant_id, j.job_id, j.state)
    SELECT * FROM updated;
END
$$;
