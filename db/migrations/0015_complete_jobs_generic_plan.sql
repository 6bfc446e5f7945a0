-- complete_jobs with a cached plan (bench/webhook_load, stripe.post jobs worked while webhooks
-- arrive). 0003 gave it plan_cache_mode = force_custom_plan, which applies to every statement
-- run while the function runs: its one statement was planned afresh on every call. Under the
-- webhook load (each stripe.post completes its own job in its posting transaction, one call per
-- job) it was the costliest function in the database: 937 calls took 2.8 s, 3.0 ms per call
-- (pg_stat_user_functions, track_functions = pl), more than the claims and enqueues together.
--
-- The statement joins the input arrays to bankworker.jobs by primary key and updates those rows;
-- the plan is the same for every value: one primary key probe per input row, plus the unique-key
-- probe for retries. As 0008 did for claim_jobs, the function uses a generic plan, made once per
-- connection, with hash and merge joins off so the plan cannot turn into a scan of the table for a
-- large input array (0003's reason for custom plans). Same contract, same body, same grants
-- (CREATE OR REPLACE keeps them), owned by bankworker_owner.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.complete_jobs(p_owner uuid, p_tenants uuid[], p_ids bigint[], p_outcomes text[],
                                         p_delays_ms bigint[], p_errors text[], p_now timestamptz)
RETURNS TABLE (tenant_id uuid, job_id bigint, state text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_generic_plan
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(p_outcomes) AS o(v)
              WHERE o.v IS NULL OR o.v NOT IN ('done', 'retry', 'in_doubt', 'needs_user_action', 'permanent')) THEN
    RAISE EXCEPTION 'complete_jobs: unknown outcome' USING ERRCODE = 'invalid_parameter_value';
  END IF;
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
