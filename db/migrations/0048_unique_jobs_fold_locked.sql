-- A request folded into a waiting job with the same unique key now locks that job until the
-- requester commits, so the job cannot run before the requester's rows are visible.
--
-- The race (found through the demo's reconciliation step, which printed payouts still `pending`):
-- a Plaid sync stored deposits and, in the same transaction, enqueued `reconcile.match`. A payout
-- posting had just enqueued one with the same unique key, so the sync's request was folded into
-- that waiting job with ON CONFLICT ... DO NOTHING, which takes no lock. The waiting job was
-- claimed and ran before the sync committed, saw no deposits, and nothing asked for another match.
-- Every unique-keyed job had the same hole: a request folded into a waiting job could be served by
-- a run that does not see the requester's work.
--
-- The fold is now ON CONFLICT ... DO UPDATE with an update that changes nothing (run_at = run_at).
-- It row-locks the waiting job until the requester's transaction ends: a claim (FOR UPDATE SKIP
-- LOCKED) skips the job meanwhile, and the NOTIFY sent at the requester's commit wakes the workers
-- to claim it then. If the job was claimed before the fold reached it, the fold waits for that
-- claim to commit; the job is then `running`, no longer conflicts, and the request inserts a new
-- waiting job (the follow-up), as a request during a run always did.
--
-- What that costs: requesters of one key queue on its waiting job's row lock until the one before
-- commits (a second payout posting of a tenant waits on the first's transaction). enqueue_jobs
-- takes its locks in (tenant, unique key) order, so two batches cannot deadlock on each other, and
-- folds duplicates within one batch first (DO UPDATE may not touch a row twice in a statement).
--
-- What callers see: enqueue_jobs still returns only the ids it inserted (a fold returns none);
-- enqueue_sync_request and enqueue_revoke_request return the waiting job's id either way, now from
-- the statement itself rather than a second lookup that a claim in between could make NULL.
-- The scheduler's inserts (schedule_due_syncs, the Stripe recovery sweep) keep DO NOTHING: they
-- carry no requester's rows, and they should not wait on an application's open transaction.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.enqueue_jobs(p_tenants uuid[], p_kinds text[], p_payloads jsonb[],
    p_priorities smallint[], p_run_ats timestamptz[], p_unique_keys text[], p_connections uuid[],
    p_attempts_max integer[])
RETURNS TABLE (job_id bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = auto AS $$
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
    WITH given AS (
      SELECT DISTINCT ON (i.tenant_id, i.unique_key, CASE WHEN i.unique_key IS NULL THEN i.ord END) i.*
        FROM unnest(p_tenants, p_kinds, p_payloads, p_priorities, p_run_ats, p_unique_keys, p_connections,
                    p_attempts_max) WITH ORDINALITY
             AS i(tenant_id, kind, payload, priority, run_at, unique_key, connection_id, attempts_max, ord)
       ORDER BY i.tenant_id, i.unique_key, CASE WHEN i.unique_key IS NULL THEN i.ord END, i.ord
    ),
    written AS (
      INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, run_at, unique_key, connection_id,
                                        attempts_max)
      SELECT g.tenant_id, g.kind, g.payload, g.priority, coalesce(g.run_at, now()), g.unique_key, g.connection_id,
             g.attempts_max
        FROM given g
       ORDER BY g.unique_key IS NULL, g.tenant_id, g.unique_key, g.ord
      ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
        DO UPDATE SET run_at = j.run_at
      RETURNING j.job_id, j.xmax = 0 AS inserted
    )
    SELECT w.job_id FROM written w WHERE w.inserted;
  IF n > 0 THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION bankworker.enqueue_sync_request(tenant uuid, connection uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  status text := bankworker.require_request_scope(tenant, connection);
  key text := 'plaid.sync:' || connection::text;
  id bigint;
BEGIN
  IF status IN ('revoking', 'revoked') THEN
    RAISE EXCEPTION 'connection % is %; it cannot be synced', connection, status
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, unique_key, connection_id)
  VALUES (tenant, 'plaid.sync', jsonb_build_object('connection_id', connection), 50, key, connection)
  ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
    DO UPDATE SET run_at = j.run_at
  RETURNING j.job_id INTO id;
  PERFORM pg_notify('bankworker_jobs', '');
  RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION bankworker.enqueue_revoke_request(tenant uuid, connection uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  status text := bankworker.require_request_scope(tenant, connection);
  key text := 'plaid.revoke:' || connection::text;
  id bigint;
BEGIN
  INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, unique_key, connection_id)
  VALUES (tenant, 'plaid.revoke', jsonb_build_object('connection_id', connection), 0, key, connection)
  ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
    DO UPDATE SET run_at = j.run_at
  RETURNING j.job_id INTO id;
  PERFORM pg_notify('bankworker_jobs', '');
  RETURN id;
END
$$;

-- declare_currency (0038): the syncs it requests must see the currency it declared.
CREATE OR REPLACE FUNCTION bankworker.declare_currency(p_code text, p_exponent integer)
RETURNS TABLE (declared boolean, syncs_requested bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  known integer;
BEGIN
  IF p_code IS NULL OR p_code !~ '^[A-Z0-9]{3,8}$' THEN
    RAISE EXCEPTION 'a currency code is 3 to 8 of A-Z 0-9' USING ERRCODE = 'check_violation';
  END IF;
  IF p_exponent IS NULL OR p_exponent < 0 OR p_exponent > 18 THEN
    RAISE EXCEPTION 'a currency exponent is 0 to 18 (currency_exponent_max)' USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO bankworker.currencies AS c (code, exponent, iso) VALUES (p_code, p_exponent, false)
    ON CONFLICT (code) DO NOTHING;
  declared := FOUND;
  IF NOT declared THEN
    SELECT c.exponent INTO known FROM bankworker.currencies c WHERE c.code = p_code;
    IF known <> p_exponent THEN
      RAISE EXCEPTION 'currency % is declared already with exponent %; an exponent never changes', p_code, known
        USING ERRCODE = 'unique_violation';
    END IF;
  END IF;
  INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, unique_key, connection_id)
  SELECT q.tenant_id, 'plaid.sync', jsonb_build_object('connection_id', q.connection_id), 50,
         'plaid.sync:' || q.connection_id::text, q.connection_id
    FROM (SELECT DISTINCT tenant_id, connection_id FROM bankworker.plaid_quarantine
           WHERE currency = p_code AND reason = 'unknown_currency') q
   ORDER BY q.tenant_id, q.connection_id
  ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
    DO UPDATE SET run_at = j.run_at;
  SELECT count(DISTINCT (q.tenant_id, q.connection_id)) INTO syncs_requested
    FROM bankworker.plaid_quarantine q WHERE q.currency = p_code AND q.reason = 'unknown_currency';
  IF syncs_requested > 0 THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
  RETURN NEXT;
END
$$;
