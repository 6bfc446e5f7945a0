-- The reference check of bank transactions looks each distinct value up once.
--
-- 0013's statement trigger checked the currency and the connection of every row it was given: one
-- index probe into currencies per row (with a heap fetch each, the table being too small for the
-- visibility map to pay) and a nested loop over the tenant's connections per row. auto_explain on
-- sync_bench showed the two queries taking 5-10 ms and about 4 ms for a 1,000-row apply whose
-- INSERT took 27-31 ms, and pg_stat_user_functions 7 ms per call: a fifth of the database's time.
-- A sync's rows carry one connection and a few currencies, so each query now looks up the
-- distinct values of the statement (a hash aggregate over the transition table) and probes only
-- those. What it refuses, and with which error, is unchanged.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.check_transaction_references() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  unknown text;
BEGIN
  SELECT d.currency INTO unknown
    FROM (SELECT DISTINCT n.currency FROM changed n) d
   WHERE NOT EXISTS (SELECT 1 FROM bankworker.currencies c WHERE c.code = d.currency)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'currency % of a bank transaction is not in bankworker.currencies', unknown
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT d.connection_id::text INTO unknown
    FROM (SELECT DISTINCT n.tenant_id, n.connection_id FROM changed n) d
   WHERE NOT EXISTS (SELECT 1 FROM bankworker.connections c
                      WHERE c.tenant_id = d.tenant_id AND c.connection_id = d.connection_id)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'connection % of a bank transaction is not in bankworker.connections', unknown
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$$;
