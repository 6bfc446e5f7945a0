-- The `bankworker run` processes and their heartbeats, for the operator console's overview
-- (issue #22: "the worker processes alive and their last heartbeat") and the
-- bankworker_worker_processes gauge.
--
-- A process's id is its dispatcher's lease owner id, the worker_id `bankworker run` logs at start
-- and the worker every failed attempt names (0039), so an attempt's worker can be found here.
-- Not tenant data: no tenant_id and no row-level security. The worker has no privilege on the
-- table itself; it registers, beats, stops and lists only through the functions below, so it can
-- neither edit a row's host, pid or start time nor delete a live process's row.
--
-- States, decided here so the console and the gauge agree: stopped (marked on graceful shutdown),
-- alive (a beat within three of the process's own heartbeat intervals), silent (older: the process
-- was killed, its host is gone, or it cannot reach the database). A row stopped or silent for a
-- day is pruned by the next beat of any process.
SET LOCAL ROLE bankworker_owner;

CREATE TABLE bankworker.worker_processes (
  process_id uuid PRIMARY KEY,
  hostname text NOT NULL CHECK (length(hostname) BETWEEN 1 AND 255),
  os_pid integer NOT NULL CHECK (os_pid > 0),
  version text NOT NULL CHECK (length(version) <= 64),
  heartbeat_interval_ms integer NOT NULL CHECK (heartbeat_interval_ms BETWEEN 100 AND 3600000),
  started_at timestamptz NOT NULL,
  last_heartbeat_at timestamptz NOT NULL,
  stopped_at timestamptz,
  CHECK (last_heartbeat_at >= started_at),
  CHECK (stopped_at IS NULL OR stopped_at >= started_at)
);

-- Registers the process (its first call) or records its heartbeat (every later one); a stopped
-- process's row is left as it is. Then prunes up to 100 rows stopped or silent for a day, skipping
-- rows another process's beat is pruning (no two beats wait on each other). p_now: NULL in
-- production (the database's clock); tests pass one.
CREATE FUNCTION bankworker.beat_worker_process(p_process uuid, p_hostname text, p_pid integer, p_version text,
                                               p_interval_ms integer, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
  t_now timestamptz := coalesce(p_now, now());
BEGIN
  INSERT INTO bankworker.worker_processes AS w (process_id, hostname, os_pid, version, heartbeat_interval_ms,
                                                 started_at, last_heartbeat_at)
  VALUES (p_process, p_hostname, p_pid, p_version, p_interval_ms, t_now, t_now)
  ON CONFLICT (process_id) DO UPDATE
    SET last_heartbeat_at = greatest(w.last_heartbeat_at, t_now)
    WHERE w.stopped_at IS NULL;
  DELETE FROM bankworker.worker_processes d
   WHERE d.process_id IN (SELECT o.process_id FROM bankworker.worker_processes o
                           WHERE coalesce(o.stopped_at, o.last_heartbeat_at) < t_now - interval '1 day'
                           LIMIT 100
                             FOR UPDATE SKIP LOCKED);
END
$$;

-- Marks the process stopped (graceful shutdown); a second call changes nothing. Returns whether
-- the process had a row still running.
CREATE FUNCTION bankworker.stop_worker_process(p_process uuid, p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
  t_now timestamptz := coalesce(p_now, now());
BEGIN
  UPDATE bankworker.worker_processes w
     SET stopped_at = greatest(w.last_heartbeat_at, t_now), last_heartbeat_at = greatest(w.last_heartbeat_at, t_now)
   WHERE w.process_id = p_process AND w.stopped_at IS NULL;
  RETURN FOUND;
END
$$;

-- Every process, its state and the age of its last heartbeat in whole seconds; live ones first,
-- then by host and start. At most p_limit rows (1..1000).
CREATE FUNCTION bankworker.worker_processes(p_limit integer, p_now timestamptz)
RETURNS TABLE (process_id uuid, hostname text, os_pid integer, version text, started_at timestamptz,
               last_heartbeat_at timestamptz, stopped_at timestamptz, heartbeat_age_s bigint, state text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
#variable_conflict use_column
DECLARE
  t_now timestamptz := coalesce(p_now, now());
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
    RAISE EXCEPTION 'worker_processes: limit 1..1000' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
    SELECT s.process_id, s.hostname, s.os_pid, s.version, s.started_at, s.last_heartbeat_at, s.stopped_at,
           s.heartbeat_age_s, s.state
      FROM (SELECT w.*, greatest(0, floor(extract(epoch FROM t_now - w.last_heartbeat_at)))::bigint AS heartbeat_age_s,
                   CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                        WHEN t_now - w.last_heartbeat_at <= 3 * w.heartbeat_interval_ms * interval '1 millisecond'
                          THEN 'alive'
                        ELSE 'silent' END AS state
              FROM bankworker.worker_processes w) s
     ORDER BY s.state = 'stopped', s.state = 'silent', s.hostname, s.started_at, s.process_id
     LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION bankworker.beat_worker_process(uuid, text, integer, text, integer, timestamptz),
  bankworker.stop_worker_process(uuid, timestamptz), bankworker.worker_processes(integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.beat_worker_process(uuid, text, integer, text, integer, timestamptz),
  bankworker.stop_worker_process(uuid, timestamptz), bankworker.worker_processes(integer, timestamptz)
  TO bankworker_worker;
