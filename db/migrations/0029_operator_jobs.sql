-- Operator views and bulk changes of the job queue (issue 20): `bankworker jobs show ID` and
-- `jobs retry|cancel --state S --kind K --tenant T [--dry-run]`. Like 0003's machinery they are
-- SECURITY DEFINER functions owned by bankworker_owner that touch bankworker.jobs only, so the
-- runtime login manages jobs across tenants without reading any other tenant data. The payload
-- leaves the database as it is stored; the CLI masks it (crypto/redact.hpp) before printing.
SET LOCAL ROLE bankworker_owner;

-- One job with everything the queue knows about it; no row when there is no such job. The queue
-- keeps the last attempt's error only (last_error), not a history.
CREATE FUNCTION bankworker.job_details(p_job_id bigint)
RETURNS TABLE (job_id bigint, tenant_id uuid, kind text, state text, priority smallint, attempt integer,
               attempts_max integer, run_at timestamptz, created_at timestamptz, started_at timestamptz,
               finished_at timestamptz, failure text, last_error text, in_doubt boolean, connection_id uuid,
               unique_key text, payload text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
  SELECT j.job_id, j.tenant_id, j.kind, j.state, j.priority, j.attempt, j.attempts_max, j.run_at, j.created_at,
         j.started_at, j.finished_at, j.failure, j.last_error, j.in_doubt, j.connection_id, j.unique_key,
         j.payload::text
    FROM bankworker.jobs j
   WHERE j.job_id = p_job_id
$$;

-- Revives (p_retry) or cancels up to p_limit (1..10000) jobs matching every filter given, oldest
-- first, or with p_dry_run only names them. Retry takes failed, cancelled and retryable jobs (as
-- retry_job); cancel takes available, retryable and running ones (as cancel_job: a running job
-- loses its lease). A job that cannot be revived because a job with its unique key is already
-- waiting is skipped. Returns each matching job with its state before and whether it changed.
CREATE FUNCTION bankworker.change_jobs(p_retry boolean, p_state text, p_kind text, p_tenant uuid, p_limit integer,
                                       p_dry_run boolean)
RETURNS TABLE (job_id bigint, tenant_id uuid, kind text, state text, changed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
  candidate record;
  allowed text[] := CASE WHEN p_retry THEN ARRAY['failed', 'cancelled', 'retryable']
                         ELSE ARRAY['available', 'retryable', 'running'] END;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
    RAISE EXCEPTION 'change_jobs: limit 1..10000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR candidate IN
    SELECT j.tenant_id, j.job_id, j.kind, j.state
      FROM bankworker.jobs j
     WHERE j.state = ANY (allowed) AND (p_state IS NULL OR j.state = p_state)
       AND (p_kind IS NULL OR j.kind = p_kind) AND (p_tenant IS NULL OR j.tenant_id = p_tenant)
     ORDER BY j.job_id
     LIMIT p_limit
       FOR UPDATE
  LOOP
    job_id := candidate.job_id; tenant_id := candidate.tenant_id; kind := candidate.kind;
    state := candidate.state; changed := false;
    IF NOT p_dry_run THEN
      BEGIN
        IF p_retry THEN
          UPDATE bankworker.jobs j
             SET state = 'available', attempt = 0, run_at = now(), finished_at = NULL, failure = NULL
           WHERE j.tenant_id = candidate.tenant_id AND j.job_id = candidate.job_id;
        ELSE
          UPDATE bankworker.jobs j
             SET state = 'cancelled', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
           WHERE j.tenant_id = candidate.tenant_id AND j.job_id = candidate.job_id;
        END IF;
        changed := true;
      EXCEPTION WHEN unique_violation THEN
        changed := false;
      END;
    END IF;
    RETURN NEXT;
  END LOOP;
  -- Revived jobs are ready now: wake the workers when this transaction commits.
  IF p_retry AND NOT p_dry_run THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
END
$$;

REVOKE ALL ON FUNCTION bankworker.job_details(bigint),
  bankworker.change_jobs(boolean, text, text, uuid, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.job_details(bigint),
  bankworker.change_jobs(boolean, text, text, uuid, integer, boolean) TO bankworker_worker;
