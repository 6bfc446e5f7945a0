-- The scheduler and the shared rate limiter (issue 7 item 2, issue 5 item 6).
--
-- Both are coordination between worker processes that share one database, and PostgreSQL is the
-- only thing they share: row locks decide who schedules a connection's periodic sync, who runs a
-- maintenance task this period, and who gets the next Plaid call.
--
-- Cross-tenant work. Scheduling periodic syncs reads every tenant's connections, and pruning the
-- external-call log deletes every tenant's old rows. Like the queue machinery (0003), that runs in
-- SECURITY DEFINER functions owned by bankworker_owner (which already reads every tenant row
-- through 0004's tenant_directory policy). Those two tables still bind the owner by
-- the tenant policy; the extra owner policies below admit every row only while the setting
-- bankworker.cross_tenant is 'on'. The two functions here turn it on for their own statements and
-- off again before they return (a function-level SET clause would be neater, but PostgreSQL 15
-- refuses one on a custom setting to a non-superuser owner; an error aborts the transaction, which
-- undoes the setting too). So every other function that runs as the owner (the request functions
-- read connections) keeps seeing only the caller's tenant, as before. A caller could turn the
-- setting on itself; it changes nothing for the caller's own role (the policies name the owner),
-- and each owner function filters by the caller's tenant on its own, as 0003's do.
--
-- Every function runs with jit = off and plan_cache_mode = force_custom_plan, as in 0003.
SET LOCAL ROLE bankworker_owner;

-- Periodic work claimed by one process per period (maintenance; later the Stripe missed-event
-- recovery). Not tenant data: one row per task name.
CREATE TABLE bankworker.schedules (
  name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND length(name) <= 64),
  interval_ms bigint NOT NULL CHECK (interval_ms BETWEEN 1000 AND 604800000),
  next_run_at timestamptz NOT NULL,
  last_run_at timestamptz
);

-- Rate-limit buckets shared by every worker process. Not tenant data: a key names a provider
-- limit (plaid:client:/transactions/sync) or one item's limit (plaid:item:<connection id>), never
-- a secret.
--
-- Algorithm: a sliding window over one-second slots. counts[i] is how many tokens were taken in
-- second window_start_s + i - 1; the window holds 61 slots, the current second and the 60 before
-- it. A take is allowed when the sum over all 61 slots is below the limit. Any 60-second interval
-- (t - 60 s, t] lies inside those 61 slots, so no 60-second interval ever holds more than the
-- limit: the guarantee is exact in the safe direction, at the cost of a window up to one second
-- longer than a minute (under 2% of throughput). A token bucket was the other candidate; it lets a
-- full bucket plus a minute of refill through in one minute (nearly twice the limit), which is
-- what Plaid's per-minute limits answer with RATE_LIMIT_EXCEEDED. A log of every call's time
-- would be exact too, but holds up to 2,500 timestamps per row rewritten on every call.
CREATE TABLE bankworker.rate_buckets (
  key text PRIMARY KEY CHECK (key ~ '^[a-z0-9][a-z0-9_.:/-]*$' AND length(key) <= 200),
  per_minute integer NOT NULL CHECK (per_minute BETWEEN 1 AND 1000000),
  window_start_s bigint NOT NULL,
  counts integer[] NOT NULL CHECK (cardinality(counts) = 61),
  updated_at timestamptz NOT NULL
);
-- Pruning finds idle buckets by age.
CREATE INDEX rate_buckets_updated_at ON bankworker.rate_buckets (updated_at);

-- The due scan of the periodic sync: active connections by next sync time. NULL (an active
-- connection that was never given a next sync time) sorts first and counts as due.
CREATE INDEX connections_next_sync ON bankworker.connections (next_sync_at NULLS FIRST)
  WHERE status = 'active';

CREATE POLICY cross_tenant_machinery ON bankworker.connections FOR ALL TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on')
  WITH CHECK (current_setting('bankworker.cross_tenant', true) = 'on');
CREATE POLICY cross_tenant_machinery ON bankworker.external_calls FOR ALL TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on')
  WITH CHECK (current_setting('bankworker.cross_tenant', true) = 'on');

-- Takes one token from every bucket named (p_keys[i] with the limit p_per_minute[i]) or from none,
-- at p_now (NULL: the database clock). Returns 0 when the tokens were taken, otherwise how many
-- milliseconds until every bucket has one free again (the longest wait of the exhausted ones).
--
-- Exact under concurrency: the bucket rows are created if missing, then locked FOR UPDATE in key
-- order (one order for every caller, so two takers never deadlock), and checked and updated
-- under those locks. The locks last until the caller's transaction ends, so call it in a short
-- transaction of its own. A clock that steps back is treated as still at the newest second seen,
-- which can only make the limiter stricter; the wait returned is at most 61 s all the same.
CREATE FUNCTION bankworker.take_rate_tokens(p_keys text[], p_per_minute integer[], p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  n integer := coalesce(cardinality(p_keys), 0);
  now_ms bigint := floor(extract(epoch FROM coalesce(p_now, clock_timestamp())) * 1000)::bigint;
  now_s bigint := floor(now_ms / 1000.0)::bigint;
  bucket record;
  limit_of integer;
  current_s bigint;
  start_s bigint;
  shift bigint;
  slots integer[];
  used bigint;
  excess bigint;
  wait_ms bigint := 0;
  i integer;
BEGIN
  IF n < 1 OR n > 8 THEN
    RAISE EXCEPTION 'take_rate_tokens: 1..8 buckets (rate_buckets_per_take_max), not %', n
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(cardinality(p_per_minute), 0) <> n THEN
    RAISE EXCEPTION 'take_rate_tokens: keys and limits differ in length' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF (SELECT count(DISTINCT k) FROM unnest(p_keys) AS k) <> n OR array_position(p_keys, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'take_rate_tokens: bucket keys must be distinct and not null' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(p_per_minute) AS l WHERE l IS NULL OR l < 1 OR l > 1000000) THEN
    RAISE EXCEPTION 'take_rate_tokens: per_minute 1..1000000' USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- Created in key order too: concurrent inserts of the same new keys wait on each other's index
  -- entries, and one order keeps that from deadlocking.
  INSERT INTO bankworker.rate_buckets (key, per_minute, window_start_s, counts, updated_at)
  SELECT b.key, b.per_minute, now_s - 60, array_fill(0, ARRAY[61]), coalesce(p_now, clock_timestamp())
    FROM unnest(p_keys, p_per_minute) AS b(key, per_minute)
   ORDER BY b.key
  ON CONFLICT (key) DO NOTHING;

  -- Pass 1: lock every bucket and find the wait; nothing is written unless every bucket has room.
  FOR bucket IN
    SELECT r.key, r.window_start_s, r.counts, b.per_minute AS wanted
      FROM bankworker.rate_buckets r JOIN unnest(p_keys, p_per_minute) AS b(key, per_minute) ON b.key = r.key
     ORDER BY r.key
       FOR UPDATE OF r
  LOOP
    limit_of := bucket.wanted;
    current_s := greatest(now_s, bucket.window_start_s + 60);
    start_s := current_s - 60;
    shift := start_s - bucket.window_start_s;
    IF shift >= 61 THEN
      slots := array_fill(0, ARRAY[61]);
    ELSIF shift > 0 THEN
      slots := bucket.counts[shift::integer + 1:61] || array_fill(0, ARRAY[shift::integer]);
    ELSE
      slots := bucket.counts;
    END IF;
    SELECT coalesce(sum(c), 0) INTO used FROM unnest(slots) AS c;
    IF used >= limit_of THEN
      -- Slot i (second start_s + i - 1) leaves the window at the start of second start_s + i + 60.
      -- Wait for the first second by which enough old slots have left for one token to fit.
      excess := used - limit_of + 1;
      FOR i IN 1..61 LOOP
        excess := excess - slots[i];
        IF excess <= 0 THEN
          wait_ms := greatest(wait_ms, (start_s + i + 60) * 1000 - now_ms);
          EXIT;
        END IF;
      END LOOP;
    END IF;
    UPDATE bankworker.rate_buckets r SET window_start_s = start_s, counts = slots, per_minute = limit_of
     WHERE r.key = bucket.key;
  END LOOP;

  IF wait_ms > 0 THEN
    -- Bounded by the window even after the clock stepped back: the caller asks again after it.
    RETURN least(wait_ms, 61000);
  END IF;
  -- Pass 2: every bucket had room; take one token from each, in the current second's slot.
  UPDATE bankworker.rate_buckets r
     SET counts[61] = r.counts[61] + 1, updated_at = greatest(r.updated_at, coalesce(p_now, clock_timestamp()))
   WHERE r.key = ANY (p_keys);
  RETURN 0;
END
$$;

-- Deletes up to p_limit buckets idle since before p_before (their window is empty after 61
-- seconds, so a bucket idle longer than that carries no state). A busy bucket is locked and skipped.
CREATE FUNCTION bankworker.prune_rate_buckets(p_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  pruned integer;
BEGIN
  IF p_before IS NULL OR p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'prune_rate_buckets: time required, limit 1..100000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  DELETE FROM bankworker.rate_buckets r
   USING (SELECT o.key FROM bankworker.rate_buckets o
           WHERE o.updated_at < least(p_before, now() - interval '61 seconds')
           ORDER BY o.updated_at
           LIMIT p_limit
             FOR UPDATE SKIP LOCKED) old
   WHERE r.key = old.key;
  GET DIAGNOSTICS pruned = ROW_COUNT;
  RETURN pruned;
END
$$;

-- Claims the periodic task p_name for this period: true for exactly one caller per period, when
-- the task is due at p_now (NULL: the database clock); the task is then next due p_interval_ms
-- later. A task seen for the first time is due at once. A caller that finds the row locked by
-- another claimer skips it (that one is claiming this period).
CREATE FUNCTION bankworker.claim_schedule(p_name text, p_interval_ms bigint, p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  t_now timestamptz := coalesce(p_now, now());
  due text;
BEGIN
  IF p_interval_ms IS NULL OR p_interval_ms < 1000 OR p_interval_ms > 604800000 THEN
    RAISE EXCEPTION 'claim_schedule: interval 1000..604800000 ms' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO bankworker.schedules (name, interval_ms, next_run_at) VALUES (p_name, p_interval_ms, t_now)
  ON CONFLICT (name) DO NOTHING;
  SELECT s.name INTO due FROM bankworker.schedules s
   WHERE s.name = p_name AND s.next_run_at <= t_now
     FOR UPDATE SKIP LOCKED;
  IF due IS NULL THEN
    RETURN false;
  END IF;
  UPDATE bankworker.schedules s
     SET interval_ms = p_interval_ms, next_run_at = t_now + p_interval_ms * interval '1 millisecond',
         last_run_at = t_now
   WHERE s.name = p_name;
  RETURN true;
END
$$;

-- A claimed task that failed asks to run again sooner than its interval: due p_retry_ms after
-- p_now, unless it is already due earlier.
CREATE FUNCTION bankworker.defer_schedule(p_name text, p_retry_ms bigint, p_now timestamptz)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
  UPDATE bankworker.schedules s
     SET next_run_at = least(s.next_run_at, coalesce(p_now, now()) + greatest(p_retry_ms, 1000) * interval '1 millisecond')
   WHERE s.name = p_name
$$;

-- Enqueues the periodic plaid.sync of up to p_limit active connections that are due at p_now
-- (NULL: the database clock), across tenants, and moves each one's next sync to p_now plus
-- p_interval_ms plus a jitter in [0, p_jitter_ms] so that tenants linked together do not stay in
-- lock-step. The jitter is a hash of the connection and p_seed: spread evenly, and reproducible
-- in tests from the seed.
--
-- Exactly once across processes: the due rows are locked FOR UPDATE SKIP LOCKED, so concurrent
-- schedulers take disjoint connections, and each one's next_sync_at moves in the same
-- transaction as its job is enqueued. The job follows the unique-key rule of request_sync: a
-- sync already waiting for the connection absorbs this one. Connections linking, needing
-- re-authentication, being revoked or revoked are never picked, nor those of an offboarded tenant. Returns how many connections
-- were scheduled and how many jobs that inserted; the caller repeats while connections = p_limit.
CREATE FUNCTION bankworker.schedule_due_syncs(p_now timestamptz, p_interval_ms bigint, p_jitter_ms bigint,
                                              p_seed bigint, p_limit integer)
RETURNS TABLE (connections integer, jobs integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
  picked integer;
  inserted integer;
BEGIN
  IF p_interval_ms IS NULL OR p_interval_ms < 60000 OR p_interval_ms > 604800000 OR p_jitter_ms IS NULL
     OR p_jitter_ms < 0 OR p_jitter_ms > p_interval_ms OR p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
    RAISE EXCEPTION 'schedule_due_syncs: interval 60000..604800000 ms, jitter 0..interval, limit 1..10000'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  -- One statement: the due rows are locked, their jobs inserted and their next sync moved
  -- together; the CTEs all see the same locked set.
  WITH due AS MATERIALIZED (
    SELECT c.tenant_id, c.connection_id FROM bankworker.connections c
     WHERE c.status = 'active' AND (c.next_sync_at IS NULL OR c.next_sync_at <= t_now)
       AND EXISTS (SELECT 1 FROM bankworker.tenants t WHERE t.tenant_id = c.tenant_id AND t.status = 'active')
     ORDER BY c.next_sync_at NULLS FIRST
     LIMIT p_limit
       FOR UPDATE OF c SKIP LOCKED
  ),
  queued AS (
    INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, unique_key, connection_id)
    SELECT d.tenant_id, 'plaid.sync', jsonb_build_object('connection_id', d.connection_id), 50,
           'plaid.sync:' || d.connection_id::text, d.connection_id
      FROM due d
    ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
      DO NOTHING
    RETURNING j.job_id
  ),
  moved AS (
    -- The sign bit is cleared rather than abs() taken: abs of the smallest bigint overflows.
    UPDATE bankworker.connections c
       SET next_sync_at = t_now + (p_interval_ms
                                   + (hashtextextended(c.connection_id::text, coalesce(p_seed, 0))
                                      & 9223372036854775807) % (p_jitter_ms + 1))
                                  * interval '1 millisecond',
           updated_at = now()
      FROM due d
     WHERE c.tenant_id = d.tenant_id AND c.connection_id = d.connection_id
    RETURNING c.connection_id
  )
  SELECT (SELECT count(*) FROM moved)::integer, (SELECT count(*) FROM queued)::integer INTO picked, inserted;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);

  IF inserted > 0 THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
  RETURN QUERY SELECT picked, inserted;
END
$$;

-- Deletes up to p_limit external-call log rows older than p_before, across tenants (DESIGN.md
-- §4: the log is kept 30 days). The caller repeats while the answer is p_limit, so no statement
-- holds locks for long.
CREATE FUNCTION bankworker.prune_external_calls(p_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  pruned integer;
BEGIN
  IF p_before IS NULL OR p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'prune_external_calls: time required, limit 1..100000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  DELETE FROM bankworker.external_calls e
   USING (SELECT o.tenant_id, o.call_id FROM bankworker.external_calls o
           WHERE o.occurred_at < p_before
           ORDER BY o.occurred_at
           LIMIT p_limit
             FOR UPDATE SKIP LOCKED) old
   WHERE e.tenant_id = old.tenant_id AND e.call_id = old.call_id;
  GET DIAGNOSTICS pruned = ROW_COUNT;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
  RETURN pruned;
END
$$;

-- Queue depth for /metrics: jobs waiting to run (available or retryable, due by p_now) per kind
-- and priority, with the age of the oldest in milliseconds. Counts only, never a tenant or a
-- payload; at most p_limit groups.
CREATE FUNCTION bankworker.queue_depth(p_now timestamptz, p_limit integer)
RETURNS TABLE (kind text, priority smallint, jobs bigint, oldest_ms bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION 'queue_depth: limit 1..1000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
    SELECT j.kind, j.priority, count(*),
           greatest(0, floor(extract(epoch FROM t_now - min(j.run_at)) * 1000))::bigint
      FROM bankworker.jobs j
     WHERE j.state IN ('available', 'retryable') AND j.run_at <= t_now
     GROUP BY j.kind, j.priority
     ORDER BY j.kind, j.priority
     LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION bankworker.take_rate_tokens(text[], integer[], timestamptz),
  bankworker.prune_rate_buckets(timestamptz, integer),
  bankworker.claim_schedule(text, bigint, timestamptz),
  bankworker.defer_schedule(text, bigint, timestamptz),
  bankworker.schedule_due_syncs(timestamptz, bigint, bigint, bigint, integer),
  bankworker.prune_external_calls(timestamptz, integer),
  bankworker.queue_depth(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.take_rate_tokens(text[], integer[], timestamptz),
  bankworker.prune_rate_buckets(timestamptz, integer),
  bankworker.claim_schedule(text, bigint, timestamptz),
  bankworker.defer_schedule(text, bigint, timestamptz),
  bankworker.schedule_due_syncs(timestamptz, bigint, bigint, bigint, integer),
  bankworker.prune_external_calls(timestamptz, integer),
  bankworker.queue_depth(timestamptz, integer) TO bankworker_worker;
-- The worker reads the shared tables for operators (jobs list, diagnostics); it changes them only
-- through the functions above.
GRANT SELECT ON bankworker.schedules, bankworker.rate_buckets TO bankworker_worker;
