-- Every failed attempt of a job, with its error, time and worker (issue #20: `jobs show ID`
-- showed only the last error, so an operator could not tell a job that failed the same way 25
-- times from one that failed 24 different ways).
--
-- Only attempts that did not succeed are recorded: retry, in_doubt, needs_user_action and
-- permanent outcomes from complete_jobs, and leases that expired (rescue_expired_jobs). A job
-- that succeeds at its first attempt, nearly every job, writes nothing here, so the hot
-- claim/complete path of a healthy queue does no extra write; the completion statement gains one
-- insert node that finds no row (queue_bench, claim+complete of no-op jobs, measured A/B in the
-- commit that added this file).
--
-- Rows go with their job: prune_jobs deletes a pruned job's attempts in the same statement. A job
-- has at most attempts_max (<= 100) rows per run; an operator's `jobs retry` starts a new run, so
-- job_attempts() returns the newest 100 only.
--
-- The worker is the lease owner's id, which `bankworker run` logs at start as worker_id.
SET LOCAL ROLE bankworker_owner;

CREATE TABLE bankworker.job_attempts (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  job_id bigint NOT NULL,
  attempt_id bigint GENERATED ALWAYS AS IDENTITY,
  attempt integer NOT NULL CHECK (attempt >= 0),
  outcome text NOT NULL CHECK (outcome IN ('retry', 'in_doubt', 'needs_user_action', 'permanent', 'lease_expired')),
  error text CHECK (length(error) <= 2048),
  worker uuid,
  started_at timestamptz,
  finished_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, job_id, attempt_id)
);
CALL bankworker.enable_tenant_rls('bankworker.job_attempts');
CREATE POLICY queue_machinery ON bankworker.job_attempts FOR ALL TO bankworker_owner USING (true) WITH CHECK (true);

-- 0019's set-based completion for batches over 256 jobs, now also recording the attempts that
-- did not succeed. The update returns each job's outcome and error, and the insert takes those.
CREATE OR REPLACE FUNCTION bankworker.complete_jobs_many(p_owner uuid, p_tenants uuid[], p_ids bigint[],
                                                         p_outcomes text[], p_delays_ms bigint[], p_errors text[],
                                                         t_now timestamptz)
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
      RETURNING j.tenant_id, j.job_id, j.state, j.attempt, j.started_at, d.outcome, d.error),
    recorded AS (
      INSERT INTO bankworker.job_attempts (tenant_id, job_id, attempt, outcome, error, worker, started_at, finished_at)
      SELECT u.tenant_id, u.job_id, u.attempt, u.outcome, u.error, p_owner, u.started_at, t_now
        FROM updated u
       WHERE u.outcome <> 'done')
    SELECT u.tenant_id, u.job_id, u.state FROM updated u;
END
$$;

-- 0019's completion, unchanged but for the attempts that did not succeed: the held rows carry
-- started_at, the update returns the outcome and error, and an insert records the failures. A
-- batch of successes inserts nothing; its plan gains an insert over an empty filter.
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
  -- Locking, lease check and plan as in 0019 (every join a probe by key, generic plan).
  RETURN QUERY
    WITH held AS MATERIALIZED (
      SELECT i.tenant_id, i.job_id, i.outcome, greatest(coalesce(i.delay_ms, 0), 0) AS delay_ms,
             left(i.error, 2048) AS error, j.attempt, j.attempts_max, j.unique_key, j.state, j.lease_owner,
             j.started_at
        FROM (SELECT u.tenant_id, u.job_id, u.outcome, u.delay_ms, u.error
                FROM unnest(p_tenants, p_ids, p_outcomes, p_delays_ms, p_errors)
                  AS u(tenant_id, job_id, outcome, delay_ms, error)
               ORDER BY u.tenant_id, u.job_id) i
        CROSS JOIN LATERAL (
          SELECT j.attempt, j.attempts_max, j.unique_key, j.state, j.lease_owner, j.started_at
            FROM bankworker.jobs j
           WHERE j.tenant_id = i.tenant_id AND j.job_id = i.job_id
             FOR NO KEY UPDATE) j
    ),
    decided AS MATERIALIZED (
      SELECT h.tenant_id, h.job_id, h.outcome, h.delay_ms, h.error, h.attempt, h.started_at,
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
      RETURNING j.tenant_id, j.job_id, j.state),
    recorded AS (
      INSERT INTO bankworker.job_attempts (tenant_id, job_id, attempt, outcome, error, worker, started_at, finished_at)
      SELECT d.tenant_id, d.job_id, d.attempt, d.outcome, d.error, p_owner, d.started_at, t_now
        FROM decided d
       WHERE d.outcome <> 'done')
    SELECT * FROM updated;
END
$$;

-- 0003's rescue, now also recording each expired lease as an attempt of the worker that held it.
CREATE OR REPLACE FUNCTION bankworker.rescue_expired_jobs(p_limit integer, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  t_now timestamptz := coalesce(p_now, now());
  rescued integer;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
    RAISE EXCEPTION 'rescue_expired_jobs: limit 1..10000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  WITH expired AS (
    SELECT j.tenant_id, j.job_id, j.attempt, j.lease_owner, j.started_at,
           CASE
             WHEN j.attempt >= j.attempts_max THEN 'failed'
             WHEN j.unique_key IS NOT NULL AND EXISTS (
                    SELECT 1 FROM bankworker.jobs w
                     WHERE w.tenant_id = j.tenant_id AND w.unique_key = j.unique_key
                       AND w.state IN ('available', 'retryable')) THEN 'cancelled'
             ELSE 'available'
           END AS new_state
      FROM bankworker.jobs j
     WHERE j.state = 'running' AND j.lease_expires_at < t_now
     ORDER BY j.lease_expires_at
     LIMIT p_limit
       FOR UPDATE OF j SKIP LOCKED
  ),
  updated AS (
    UPDATE bankworker.jobs j
       SET state = e.new_state, run_at = t_now, lease_owner = NULL, lease_expires_at = NULL,
           finished_at = CASE WHEN e.new_state = 'available' THEN NULL ELSE t_now END,
           failure = CASE WHEN e.new_state = 'failed' THEN 'attempts_exhausted' END,
           last_error = 'lease expired: the worker holding the job stopped renewing it'
      FROM expired e
     WHERE j.tenant_id = e.tenant_id AND j.job_id = e.job_id AND j.state = 'running'
    RETURNING j.tenant_id, j.job_id, e.attempt, e.lease_owner, e.started_at, j.last_error)
  INSERT INTO bankworker.job_attempts (tenant_id, job_id, attempt, outcome, error, worker, started_at, finished_at)
  SELECT u.tenant_id, u.job_id, u.attempt, 'lease_expired', u.last_error, u.lease_owner, u.started_at, t_now
    FROM updated u;
  GET DIAGNOSTICS rescued = ROW_COUNT;
  RETURN rescued;
END
$$;

-- 0003's retention, now deleting the pruned jobs' attempts in the same statement.
CREATE OR REPLACE FUNCTION bankworker.prune_jobs(p_done_before timestamptz, p_dead_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  pruned integer;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'prune_jobs: limit 1..100000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  WITH gone AS (
    DELETE FROM bankworker.jobs j
     USING (SELECT f.tenant_id, f.job_id FROM bankworker.jobs f
             WHERE f.state IN ('succeeded', 'failed', 'cancelled')
               AND f.finished_at < greatest(p_done_before, p_dead_before)
               AND ((f.state <> 'failed' AND f.finished_at < p_done_before)
                    OR (f.state = 'failed' AND f.finished_at < p_dead_before))
             ORDER BY f.finished_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) old
     WHERE j.tenant_id = old.tenant_id AND j.job_id = old.job_id
    RETURNING j.tenant_id, j.job_id),
  attempts_gone AS (
    DELETE FROM bankworker.job_attempts a
     USING gone g
     WHERE a.tenant_id = g.tenant_id AND a.job_id = g.job_id)
  SELECT count(*) INTO pruned FROM gone;
  RETURN pruned;
END
$$;

-- The attempts of one job that did not succeed, newest first, at most 100 (`jobs show ID`, which
-- reads the job's tenant from job_details first, so the lookup is by primary key).
CREATE FUNCTION bankworker.job_attempts(p_tenant uuid, p_job_id bigint)
RETURNS TABLE (attempt integer, outcome text, error text, worker uuid, started_at timestamptz,
               finished_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
  SELECT a.attempt, a.outcome, a.error, a.worker, a.started_at, a.finished_at
    FROM bankworker.job_attempts a
   WHERE a.tenant_id = p_tenant AND a.job_id = p_job_id
   ORDER BY a.attempt_id DESC
   LIMIT 100
$$;

REVOKE ALL ON FUNCTION bankworker.job_attempts(uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.job_attempts(uuid, bigint) TO bankworker_worker;
