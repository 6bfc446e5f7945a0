-- complete_jobs records one job's outcome with statements by primary key.
--
-- Handlers that write to the database record their own outcome in the transaction of their effect
-- (job_queue::complete_in), one job per call: every plaid.sync, plaid.link and revocation, and a
-- stripe.post that posts alone. complete_jobs plans its set-based statement afresh on each call
-- (force_custom_plan, for its batches of up to 1,000 acks), and that plan, a CTE joining the input
-- arrays to the jobs table twice with seven partial indexes to weigh, took longer to plan than to
-- run: 1,041 ms of planning for 540 calls under webhook_load (pg_stat_statements with
-- track_planning), about 2 ms a call, against 0.08 ms for an UPDATE by primary key (EXPLAIN
-- SUMMARY, warm session). A call with one job now takes the row lock, decides the new state with
-- the same rules, and updates by key. Batches keep the set-based statement, unchanged.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.complete_jobs(p_owner uuid, p_tenants uuid[], p_ids bigint[], p_outcomes text[],
                                         p_delays_ms bigint[], p_errors text[], p_now timestamptz)
RETURNS TABLE (tenant_id uuid, job_id bigint, state text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
  one_attempt integer;
  one_attempts_max integer;
  one_unique_key text;
  one_outcome text;
  one_state text;
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(p_outcomes) AS o(v)
              WHERE o.v IS NULL OR o.v NOT IN ('done', 'retry', 'in_doubt', 'needs_user_action', 'permanent')) THEN
    RAISE EXCEPTION 'complete_jobs: unknown outcome' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF cardinality(p_ids) = 1 THEN
    -- One job: the same decision as the set-based statement below, in statements by primary key.
    SELECT j.attempt, j.attempts_max, j.unique_key INTO one_attempt, one_attempts_max, one_unique_key
      FROM bankworker.jobs j
     WHERE j.tenant_id = p_tenants[1] AND j.job_id = p_ids[1] AND j.state = 'running' AND j.lease_owner = p_owner
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
      RETURN;  -- the lease was lost: nothing recorded
    END IF;
    one_outcome := p_outcomes[1];
    one_state := CASE
                   WHEN one_outcome = 'done' THEN 'succeeded'
                   WHEN one_outcome IN ('needs_user_action', 'permanent') THEN 'failed'
                   WHEN one_attempt >= one_attempts_max THEN 'failed'
                   WHEN one_unique_key IS NOT NULL AND EXISTS (
                          SELECT 1 FROM bankworker.jobs w
                           WHERE w.tenant_id = p_tenants[1] AND w.unique_key = one_unique_key
                             AND w.state IN ('available', 'retryable')) THEN 'cancelled'
                   ELSE 'retryable'
                 END;
    RETURN QUERY
      UPDATE bankworker.jobs j
         SET state = one_state,
             run_at = CASE WHEN one_state = 'retryable'
                           THEN t_now + greatest(coalesce(p_delays_ms[1], 0), 0) * interval '1 millisecond'
                           ELSE j.run_at END,
             finished_at = CASE WHEN one_state = 'retryable' THEN NULL ELSE t_now END,
             failure = CASE
                         WHEN one_state <> 'failed' THEN NULL
                         WHEN one_outcome IN ('needs_user_action', 'permanent') THEN one_outcome
                         ELSE 'attempts_exhausted'
                       END,
             last_error = CASE WHEN one_outcome = 'done' THEN j.last_error ELSE left(p_errors[1], 2048) END,
             in_doubt = (one_outcome = 'in_doubt'),
             lease_owner = NULL, lease_expires_at = NULL
       WHERE j.tenant_id = p_tenants[1] AND j.job_id = p_ids[1]
      RETURNING j.tenant_id, j.job_id, j.state;
    RETURN;
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
