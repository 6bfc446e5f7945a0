-- Stripe Connect routing that works, and that cannot strand an event (issue 6 item 3).
--
-- 1. 0005's stripe_account_tenant() never found anything: stripe_accounts forces row-level
--    security, which binds its owner too, so the SECURITY DEFINER function (owned by
--    bankworker_owner) saw no row without a tenant set. The fix is 0007's mechanism, unchanged: an
--    owner policy that admits every row only while bankworker.cross_tenant is 'on', switched on by
--    set_config inside the definer function for its one statement and off before it returns.
--    The policy is FOR SELECT: routing only reads the mapping; the worker writes it under its
--    tenant's policy (`bankworker stripe connect`).
--
-- 2. Routing and `stripe connect` serialise per account. The inbox routes a platform event in
--    the transaction that stores it; `stripe connect` maps the account and moves its unrouted
--    events in one transaction. Without a lock, under READ COMMITTED, an inbox transaction could
--    find the account unmapped while a concurrent connect moves the unrouted events it can see,
--    and then commit its own event into stripe_unrouted_events after the move: stranded. So the
--    lookup takes a shared transaction-level advisory lock on the account (held until the
--    caller's transaction ends) and connect takes the exclusive one before it looks or moves:
--    whichever commits first, the other sees its effect. Hash collisions only serialise two
--    accounts needlessly.
--
-- 3. The platform endpoint also receives events without an `account` (the platform's own); they
--    are kept verified in stripe_unrouted_events too (nothing is dropped), so account may be NULL.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.stripe_unrouted_events ALTER COLUMN account DROP NOT NULL;

CREATE POLICY cross_tenant_machinery ON bankworker.stripe_accounts FOR SELECT TO bankworker_owner
  USING (current_setting('bankworker.cross_tenant', true) = 'on');

-- The advisory lock key of a connected account (shared by routing, exclusive by connect).
CREATE FUNCTION bankworker.stripe_account_lock_key(account_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT hashtextextended('bankworker.stripe_account:' || account_id, 0)
$$;

-- Which tenant a connected account belongs to (NULL: none yet). Takes the account's shared
-- advisory lock for the rest of the caller's transaction (see 2 above). VOLATILE now: it locks.
CREATE OR REPLACE FUNCTION bankworker.stripe_account_tenant(account_id text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
  found uuid;
BEGIN
  IF account_id IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(bankworker.stripe_account_lock_key(account_id));
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  SELECT a.tenant_id INTO found FROM bankworker.stripe_accounts a WHERE a.account = account_id;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
  RETURN found;
END
$$;

-- The tenants of up to 10,000 accounts at once (the inbox routes a whole batch with one call):
-- one row per distinct non-null account, tenant NULL when unmapped. The locks are taken in
-- account order, one order for every caller.
CREATE FUNCTION bankworker.route_stripe_accounts(p_accounts text[])
RETURNS TABLE (account text, tenant_id uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
  one text;
BEGIN
  IF coalesce(cardinality(p_accounts), 0) > 10000 THEN
    RAISE EXCEPTION 'route_stripe_accounts: at most 10000 accounts (inbox batch_max)' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR one IN SELECT DISTINCT a FROM unnest(p_accounts) AS a WHERE a IS NOT NULL ORDER BY a LOOP
    account := one;
    tenant_id := bankworker.stripe_account_tenant(one);
    RETURN NEXT;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION bankworker.stripe_account_lock_key(text), bankworker.route_stripe_accounts(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.stripe_account_lock_key(text), bankworker.route_stripe_accounts(text[])
  TO bankworker_worker;
