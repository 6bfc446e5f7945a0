-- Stripe API calls (issue #6 items 6 and 8): the missed-event recovery's high-water marks and the
-- function the scheduler calls to give each tenant with a Stripe API key one stripe.recover job.
--
-- A tenant's own restricted key is a sealed_secrets row of purpose 'stripe.api_key' (0002); the
-- platform key comes from the worker's configuration, and reads connected accounts' events with
-- Stripe-Account. Each of those is a "scope" with its own cursor: 'tenant' for the tenant's own
-- key, the acct_… id for a connected account read with the platform key.
SET LOCAL ROLE bankworker_owner;

CREATE TABLE bankworker.stripe_event_cursors (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  scope text NOT NULL CHECK (scope = 'tenant' OR scope ~ '^acct_[A-Za-z0-9]{1,64}$'),
  -- The newest event listed so far: the next run asks for events newer than it (ending_before).
  last_event_id text NOT NULL CHECK (last_event_id ~ '^[A-Za-z0-9_]{1,255}$'),
  -- Events the recovery stored that webhooks had not delivered (for operators).
  recovered_total bigint NOT NULL DEFAULT 0 CHECK (recovered_total >= 0),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, scope)
);
CALL bankworker.enable_tenant_rls('bankworker.stripe_event_cursors');
GRANT SELECT, INSERT, UPDATE, DELETE ON bankworker.stripe_event_cursors TO bankworker_worker;

-- schedule_stripe_recovery reads across tenants which ones have a key or a connected account, as
-- 0007's functions do: owner policies admitting rows only while bankworker.cross_tenant is 'on'
-- (the function turns it on for its one statement). SELECT only: it reads whether a row exists,
-- never a ciphertext.
CREATE POLICY cross_tenant_machinery ON bankworker.sealed_secrets FOR SELECT TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on');
-- stripe_accounts has the same read-only policy already (0010_stripe_connect_routing.sql).
CREATE POLICY cross_tenant_machinery ON bankworker.stripe_event_cursors FOR SELECT TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on');

-- One stripe.recover job per active tenant that has an API key of its own, or (p_platform_key:
-- the worker holds the platform key) a mapped connected account; at most one waiting per tenant
-- (unique_key), at most p_limit per call. Returns how many jobs were enqueued.
CREATE FUNCTION bankworker.schedule_stripe_recovery(p_platform_key boolean, p_limit integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  inserted integer;
BEGIN
  IF p_platform_key IS NULL OR p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
    RAISE EXCEPTION 'schedule_stripe_recovery: platform_key not null, limit 1..10000'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  WITH due AS (
    SELECT t.tenant_id FROM bankworker.tenants t
     WHERE t.status = 'active'
       AND (EXISTS (SELECT 1 FROM bankworker.sealed_secrets s
                     WHERE s.tenant_id = t.tenant_id AND s.purpose = 'stripe.api_key')
            OR (p_platform_key AND EXISTS (SELECT 1 FROM bankworker.stripe_accounts a
                                             WHERE a.tenant_id = t.tenant_id)))
     -- Least recently recovered first (a run touches its cursors even when nothing is new), so
     -- with more keyed tenants than p_limit every tenant still gets its turn.
     ORDER BY (SELECT min(c.updated_at) FROM bankworker.stripe_event_cursors c WHERE c.tenant_id = t.tenant_id)
              NULLS FIRST, t.tenant_id
     LIMIT p_limit
  ),
  queued AS (
    INSERT INTO bankworker.jobs AS j (tenant_id, kind, payload, priority, unique_key)
    SELECT d.tenant_id, 'stripe.recover', '{}'::jsonb, 100, 'stripe.recover' FROM due d
    ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
      DO NOTHING
    RETURNING j.job_id
  )
  SELECT count(*)::integer INTO inserted FROM queued;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
  IF inserted > 0 THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
  RETURN inserted;
END
$$;
REVOKE ALL ON FUNCTION bankworker.schedule_stripe_recovery(boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.schedule_stripe_recovery(boolean, integer) TO bankworker_worker;
