-- `bankworker currencies add CODE --exponent N` (issue #16): an operator declares a currency the
-- table does not know yet, and the bank rows quarantined for it (bankworker.plaid_quarantine,
-- 0030) are applied by their connection's next sync, which this requests at once.
--
-- The worker may not write bankworker.currencies (every role reads it; only the owner changes it,
-- and 0012 made it append-only), so the declaration goes through the owner's function below, as
-- scope keys do (0025). The CLI audits it in every tenant's chain in the same transaction.
SET LOCAL ROLE bankworker_owner;
-- Refusals use check_violation and unique_violation (not invalid_parameter_value, 22023, which the
-- CLI reads as "SET ROLE to a missing role": not migrated).

-- The function finds the quarantined rows of every tenant; it only counts connections and enqueues
-- their syncs, never reads the rows themselves.
CREATE POLICY currency_release ON bankworker.plaid_quarantine FOR SELECT TO bankworker_owner USING (true);

-- declared: true when the currency is new, false when it was declared already with the same
-- exponent (re-running is a no-op apart from the syncs). An exponent never changes: amounts stored
-- under it would change value, so a different one is refused.
-- syncs_requested: connections holding rows quarantined for the currency (each gets one waiting
-- plaid.sync; one already waiting absorbs it).
CREATE FUNCTION bankworker.declare_currency(p_code text, p_exponent integer)
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
  SELECT DISTINCT q.tenant_id, 'plaid.sync', jsonb_build_object('connection_id', q.connection_id), 50,
         'plaid.sync:' || q.connection_id::text, q.connection_id
    FROM bankworker.plaid_quarantine q WHERE q.currency = p_code AND q.reason = 'unknown_currency'
  ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'retryable')
    DO NOTHING;
  SELECT count(DISTINCT (q.tenant_id, q.connection_id)) INTO syncs_requested
    FROM bankworker.plaid_quarantine q WHERE q.currency = p_code AND q.reason = 'unknown_currency';
  IF syncs_requested > 0 THEN
    PERFORM pg_notify('bankworker_jobs', '');
  END IF;
  RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION bankworker.declare_currency(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.declare_currency(text, integer) TO bankworker_worker;
