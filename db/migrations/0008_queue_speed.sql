-- Queue speed (issue 3's goals: claim+complete >= 40,000 jobs/s, enqueue-to-start p50 2 ms and
-- p99 6 ms at idle) without giving up fairness, leases or durability. 0003 is applied and
-- checksummed, so its functions are replaced here; their grants stay (CREATE OR REPLACE keeps
-- them), and each keeps the SECURITY DEFINER hygiene of 0003: owned by bankworker_owner, a fixed
-- search_path, jit off.
SET LOCAL ROLE bankworker_owner;

-- claim_jobs, the same contract as in 0003, with two costs that grew with the queue removed:
--
-- 1. The walk over tenants started at a random pivot held in a MATERIALIZED CTE. The planner
--    cannot use a CTE's value in an index condition, so "tenant_id >= pivot" became a filter over
--    a scan of the whole ready index: every claim read every ready job once (49 ms with 50,000
--    queued, measured with auto_explain). The pivot is now a variable, a plain parameter of the
--    statement, and each probe is one index descent again.
-- 2. The UPDATE joined the chosen jobs back to bankworker.jobs with a hash join over a sequential
--    scan of the table (the planner's price for 1,000 primary key probes was higher than one scan),
--    which again made each claim cost as much as the table is large. This function turns hash
--    and merge joins off for its own statements: every join in it is a probe by key.
-- 3. Planning the statement took longer than running it at idle (pg_stat_statements: 1.3 s of
--    planning for 939 claims under load, about as much as their execution). Its parameters are
--    scalars (owner, limit, lease, time, pivot) plus a short filter array, and the plan is the same
--    for every value: probes down jobs_ready and the primary key, nested loops over at most 1024
--    tenants. So it uses a generic plan, made once per connection, instead of 0003's
--    force_custom_plan (whose reason, arrays of unknown size joined against the table, does not
--    apply here); the joins it could get wrong are ruled out by the settings of point 2.
CREATE OR REPLACE FUNCTION bankworker.claim_jobs(p_owner uuid, p_limit integer, p_lease_ms integer, p_now timestamptz,
                                                 p_skip_kinds text[])
RETURNS TABLE (tenant_id uuid, job_id bigint, kind text, payload jsonb, priority smallint, attempt integer,
               attempts_max integer, in_doubt boolean, connection_id uuid, run_at timestamptz,
               created_at timestamptz, lease_expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
SET plan_cache_mode = force_generic_plan SET enable_hashjoin = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
  -- Where this claim's walk over tenants starts. Random, so that with more tenants than one claim
  -- visits (1024) every tenant is reached, instead of always the lowest ids.
  t_pivot uuid := gen_random_uuid();
BEGIN
  IF p_owner IS NULL OR p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 OR p_lease_ms IS NULL
     OR p_lease_ms < 1000 OR p_lease_ms > 3600000 THEN
    RAISE EXCEPTION 'claim_jobs: owner required, limit 1..10000, lease 1000..3600000 ms'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- The claim commits without waiting for the WAL flush (until the end of the caller's
  -- transaction, which is this statement alone in the worker). Losing a claim in a database crash
  -- is the same as its worker dying: the job is available again and runs again. An effect commits
  -- with complete_jobs in a transaction of its own durability, so it never depends on this one.
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN QUERY
    WITH RECURSIVE
    -- Ordered by jobs_ready's whole key so that each probe walks that partial index (ready rows
    -- only) and never the primary key, which would step over every finished job of the tenant.
    upper_tenants AS (
      (SELECT j.tenant_id FROM bankworker.jobs j
        WHERE j.state IN ('available', 'retryable') AND j.run_at <= t_now AND j.tenant_id >= t_pivot
        ORDER BY j.tenant_id, j.priority, j.run_at, j.job_id LIMIT 1)
      UNION ALL
      SELECT (SELECT j.tenant_id FROM bankworker.jobs j
               WHERE j.state IN ('available', 'retryable') AND j.run_at <= t_now AND j.tenant_id > r.tenant_id
               ORDER BY j.tenant_id, j.priority, j.run_at, j.job_id LIMIT 1)
        FROM upper_tenants r
       WHERE r.tenant_id IS NOT NULL
    ),
    lower_tenants AS (
      (SELECT j.tenant_id FROM bankworker.jobs j
        WHERE j.state IN ('available', 'retryable') AND j.run_at <= t_now AND j.tenant_id < t_pivot
        ORDER BY j.tenant_id, j.priority, j.run_at, j.job_id LIMIT 1)
      UNION ALL
      SELECT (SELECT j.tenant_id FROM bankworker.jobs j
               WHERE j.state IN ('available', 'retryable') AND j.run_at <= t_now AND j.tenant_id > r.tenant_id
                 AND j.tenant_id < t_pivot
               ORDER BY j.tenant_id, j.priority, j.run_at, j.job_id LIMIT 1)
        FROM lower_tenants r
       WHERE r.tenant_id IS NOT NULL
    ),
    tenants AS MATERIALIZED (
      SELECT w.tenant_id
        FROM (SELECT u.tenant_id FROM upper_tenants u WHERE u.tenant_id IS NOT NULL
              UNION ALL
              SELECT l.tenant_id FROM lower_tenants l WHERE l.tenant_id IS NOT NULL) w
       LIMIT 1024
    ),
    share AS (
      SELECT greatest(1, ceil(p_limit::numeric / greatest(count(*), 1)))::integer AS per_tenant FROM tenants
    ),
    candidates AS MATERIALIZED (
      SELECT c.tenant_id, c.job_id, c.priority, c.run_at
        FROM tenants t CROSS JOIN share s
        CROSS JOIN LATERAL (
          SELECT j.tenant_id, j.job_id, j.priority, j.run_at
            FROM bankworker.jobs j
           WHERE j.tenant_id = t.tenant_id AND j.state IN ('available', 'retryable') AND j.run_at <= t_now
             AND (p_skip_kinds IS NULL OR j.kind <> ALL (p_skip_kinds))
             AND (j.unique_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM bankworker.jobs r
                    WHERE r.tenant_id = j.tenant_id AND r.unique_key = j.unique_key AND r.state = 'running'))
           ORDER BY j.priority, j.run_at, j.job_id
           LIMIT s.per_tenant
             FOR UPDATE OF j SKIP LOCKED) c
    ),
    chosen AS (
      SELECT k.tenant_id, k.job_id
        FROM (SELECT c.*, row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.run_at, c.job_id) AS turn
                FROM candidates c) k
       ORDER BY k.priority, k.turn, k.run_at, k.job_id
       LIMIT p_limit
    ),
    claimed AS (
      UPDATE bankworker.jobs j
         SET state = 'running', attempt = j.attempt + 1, lease_owner = p_owner,
             lease_expires_at = t_now + p_lease_ms * interval '1 millisecond', started_at = t_now
        FROM chosen
       WHERE j.tenant_id = chosen.tenant_id AND j.job_id = chosen.job_id
      RETURNING j.tenant_id, j.job_id, j.kind, j.payload, j.priority, j.attempt, j.attempts_max, j.in_doubt,
                j.connection_id, j.run_at, j.created_at, j.lease_expires_at
    )
    SELECT * FROM claimed;
END
$$;

-- enqueue_jobs, unchanged but for its plan cache mode. force_custom_plan applies to every
-- statement run while the function runs, including the foreign key check on tenant_id that
-- PostgreSQL runs once per inserted row: that check was planned afresh for every job (1.25 s of
-- planning for 50,000 jobs under load, a quarter of the enqueue's time). Its insert has no join
-- that a generic plan could get wrong (rows come from unnest, the only index use is the unique
-- rule's arbiter), so the default mode lets both plans be cached.
CREATE OR REPLACE FUNCTION bankworker.enqueue_jobs(p_tenants uuid[], p_kinds text[], p_payloads jsonb[],
                                        p_priorities smallint[], p_run_ats timestamptz[],
                                        p_unique_keys text[], p_connections uuid[], p_attempts_max integer[])
RETURNS TABLE (job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = auto AS $$
#variable_conflict use_column
DECLARE
  scope uuid := bankworker.current_tenant();
  n integer := coalesce(cardinality(p_tenants), 0);
BEGIN
  IF n > 10000 THEN
    RAISE EXCEPTION 'enqueue of % jobs exceeds enqueue_batch_jobs_max (10000)', n USING ERRCODE = 'program_limit_exceeded';
  END IF;
  IF coalesce(cardinality(p_kinds), 0) <> n OR coalesce(cardinality(p_payloads), 0) <> n
     OR coalesce(cardinality(p_priorities), 0) <> n OR coalesce(cardinality(p_run_ats), 0) <> n
     OR coalesce(cardinality(p_unique_keys), 0) <> n OR coalesce(cardinality(p_connections), 0) <> n
     OR coalesce(cardinality(p_attempts_max), 0) <> n THEN
    RAISE EXCEPTION 'enqueue_jobs arrays differ in length' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF scope IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(p_tenants) AS t(id) WHERE t.id IS DISTINCT FROM scope) THEN
    RAISE EXCEPTION 'a tenant-scoped transaction may enqueue jobs of its own tenant only'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN QUERY
    INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, run_at, unique_key, connection_id, attempts_max)
    SELECT i.tenant_id, i.kind, i.payload, i.priority, coalesce(i.run_at, now()), i.unique_key, i.connection_id,
           i.attempts_max
      FROM unnest(p_tenants, p_kinds, p_payloads, p_priorities, p_run_ats, p_unique_keys, p_connections,
                  p_attempts_max) AS i(tenant_id, kind, payload, priority, run_at, unique_key, connection_id, attempts_max)
    ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
      DO NOTHING
    RETURNING j.job_id;
  IF n > 0 THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
END
$$;
