-- The shared rate limiter in three statements instead of nine, on plans made once per session.
--
-- take_rate_tokens runs before every Plaid call (twice in each sync of sync_bench, where
-- pg_stat_user_functions showed 1.26 ms a call and perf a seventh of the database's CPU in
-- SECURITY DEFINER functions). Two causes:
-- * Under plan_cache_mode auto (0014) its statements were planned again on every call: a generic
--   plan of a join with unnest($keys) looks costlier than a custom plan that knows the array has
--   two elements, so the custom plan always won. force_generic_plan keeps one plan per session; the
--   plans are the same either way (a nested loop from unnest over the primary key).
-- * Each call ran nine statements: two validation queries over unnest, the insert of missing
--   buckets, the locking scan, one sum per bucket, one update per bucket and the final update.
--   Validation now uses plain expressions, the locking scan also sums each bucket's window, and
--   one update per call writes every bucket's shifted window together with its token (or without
--   it, when a bucket is full).
-- pgbench, one client calling it with a client and an item bucket (synchronous_commit off):
-- 0.67-0.86 ms a call before, 0.30-0.40 ms after. sync_bench, four interleaved pairs: PostgreSQL
-- CPU per transaction 26.0-30.1 us against 28.9-32.7 us, 41.4-49.6k against 40.5-43.0k tx/s.
--
-- What it takes, returns, refuses and writes is unchanged, with two additions: keys and limits must
-- be one-dimensional arrays numbered from 1 (the worker only ever sends those), now refused by name
-- instead of being read flattened; and the function turns off the WAL flush wait of its caller's
-- commit itself (as claim_jobs does), so the worker calls it as one autocommit statement instead of
-- BEGIN, SET LOCAL, the call and COMMIT: one round trip instead of four, and the bucket rows are
-- no longer held locked across the client's COMMIT.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.take_rate_tokens(p_keys text[], p_per_minute integer[], p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
  SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  n integer := coalesce(cardinality(p_keys), 0);
  t_now timestamptz := coalesce(p_now, clock_timestamp());
  now_ms bigint := floor(extract(epoch FROM t_now) * 1000)::bigint;
  now_s bigint := floor(now_ms / 1000.0)::bigint;
  bucket record;
  start_s bigint;
  shift bigint;
  slots integer[];
  excess bigint;
  wait_ms bigint := 0;
  taken integer;
  i integer;
  j integer;
BEGIN
  IF n < 1 OR n > 8 THEN
    RAISE EXCEPTION 'take_rate_tokens: 1..8 buckets (rate_buckets_per_take_max), not %', n
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF coalesce(cardinality(p_per_minute), 0) <> n THEN
    RAISE EXCEPTION 'take_rate_tokens: keys and limits differ in length' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF array_ndims(p_keys) <> 1 OR array_lower(p_keys, 1) <> 1 OR array_ndims(p_per_minute) <> 1
     OR array_lower(p_per_minute, 1) <> 1 THEN
    RAISE EXCEPTION 'take_rate_tokens: keys and limits must be one-dimensional arrays from 1'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Plain expressions, not queries over unnest: at most 8 keys, so the pairwise test is cheap.
  FOR i IN 1..n LOOP
    IF p_keys[i] IS NULL THEN
      RAISE EXCEPTION 'take_rate_tokens: bucket keys must be distinct and not null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR j IN 1..i - 1 LOOP
      IF p_keys[j] = p_keys[i] THEN
        RAISE EXCEPTION 'take_rate_tokens: bucket keys must be distinct and not null' USING ERRCODE = 'invalid_parameter_value';
      END IF;
    END LOOP;
  END LOOP;
  FOR i IN 1..n LOOP
    IF p_per_minute[i] IS NULL OR p_per_minute[i] < 1 OR p_per_minute[i] > 1000000 THEN
      RAISE EXCEPTION 'take_rate_tokens: per_minute 1..1000000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END LOOP;

  -- Every caller of a bucket queues on its row lock until the holder commits, so that commit must
  -- not wait for a WAL flush. Losing the last few token records in a database crash only lets a
  -- few calls too many through afterwards, which Plaid answers with a 429 that is retried; no data
  -- is at stake. It lasts until the end of the caller's transaction: the worker calls this alone,
  -- in autocommit, so the locks are released as the statement ends, with no client round trip.
  PERFORM set_config('synchronous_commit', 'off', true);

  -- Missing buckets are created in key order first: concurrent inserts of the same new keys wait
  -- on each other's index entries, and one order keeps that from deadlocking.
  INSERT INTO bankworker.rate_buckets (key, per_minute, window_start_s, counts, updated_at)
  SELECT b.key, b.per_minute, now_s - 60, array_fill(0, ARRAY[61]), t_now
    FROM unnest(p_keys, p_per_minute) AS b(key, per_minute)
   ORDER BY b.key
  ON CONFLICT (key) DO NOTHING;

  -- Lock every bucket in key order and find the wait. used is the sum of the slots still inside
  -- the window at now_s (slot i holds second window_start_s + i - 1; the window is the current
  -- second and the 60 before it, and never moves back).
  FOR bucket IN
    SELECT r.window_start_s, r.counts, b.per_minute AS wanted,
           (SELECT coalesce(sum(c), 0)
              FROM unnest(r.counts[least(greatest(now_s - 60 - r.window_start_s, 0), 61)::integer + 1:61]) AS c) AS used
      FROM bankworker.rate_buckets r JOIN unnest(p_keys, p_per_minute) AS b(key, per_minute) ON b.key = r.key
     ORDER BY r.key
       FOR UPDATE OF r
  LOOP
    IF bucket.used >= bucket.wanted THEN
      -- Slot i (second start_s + i - 1) leaves the window at the start of second start_s + i + 60.
      -- Wait for the first second by which enough old slots have left for one token to fit.
      start_s := greatest(now_s - 60, bucket.window_start_s);
      shift := start_s - bucket.window_start_s;
      IF shift >= 61 THEN
        slots := array_fill(0, ARRAY[61]);
      ELSIF shift > 0 THEN
        slots := bucket.counts[shift::integer + 1:61] || array_fill(0, ARRAY[shift::integer]);
      ELSE
        slots := bucket.counts;
      END IF;
      excess := bucket.used - bucket.wanted + 1;
      FOR i IN 1..61 LOOP
        excess := excess - slots[i];
        IF excess <= 0 THEN
          wait_ms := greatest(wait_ms, (start_s + i + 60) * 1000 - now_ms);
          EXIT;
        END IF;
      END LOOP;
    END IF;
  END LOOP;

  -- Every bucket's window moves to now_s (its per_minute to the caller's); the token goes into the
  -- current second's slot only when every bucket had room: all or none.
  taken := CASE WHEN wait_ms > 0 THEN 0 ELSE 1 END;
  UPDATE bankworker.rate_buckets r
     SET window_start_s = greatest(now_s - 60, r.window_start_s),
         per_minute = b.per_minute,
         counts = CASE
                    WHEN now_s - 60 - r.window_start_s >= 61 THEN array_fill(0, ARRAY[60]) || taken
                    WHEN now_s - 60 - r.window_start_s > 0
                      THEN r.counts[(now_s - 60 - r.window_start_s)::integer + 1:61]
                           || array_fill(0, ARRAY[(now_s - 61 - r.window_start_s)::integer]) || taken
                    ELSE r.counts[1:60] || (r.counts[61] + taken)
                  END,
         updated_at = CASE WHEN taken = 1 THEN greatest(r.updated_at, t_now) ELSE r.updated_at END
    FROM unnest(p_keys, p_per_minute) AS b(key, per_minute)
   WHERE r.key = b.key;
  -- Bounded by the window even after the clock stepped back: the caller asks again after it.
  RETURN least(wait_ms, 61000);
END
$$;
