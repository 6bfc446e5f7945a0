-- The currency of a bank transaction, checked once per statement instead of once per row.
--
-- The foreign key to bankworker.currencies ran one lookup per stored transaction, and on a table
-- of 169 rows PostgreSQL plans that lookup as a sequential scan: in sync_bench it was the largest
-- single cost of applying a page (perf: RI trigger → SPI → seq scan). A statement-level trigger
-- over the transition table checks a whole sync's rows with one anti-join instead.
--
-- What the foreign key also guaranteed, that a referenced currency never disappears, is kept by
-- making the currencies table append-only: rows may be added (a newly declared currency), never
-- changed or deleted.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.transactions DROP CONSTRAINT transactions_currency_fkey;

CREATE FUNCTION bankworker.check_transaction_currencies() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  unknown text;
BEGIN
  SELECT n.currency INTO unknown FROM changed n
   WHERE NOT EXISTS (SELECT 1 FROM bankworker.currencies c WHERE c.code = n.currency)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'currency % of a bank transaction is not in bankworker.currencies', unknown
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION bankworker.check_transaction_currencies() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.check_transaction_currencies() TO bankworker_worker;

-- A trigger with a transition table serves one event, hence two.
CREATE TRIGGER transactions_currency_known_insert AFTER INSERT ON bankworker.transactions
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_transaction_currencies();
CREATE TRIGGER transactions_currency_known_update AFTER UPDATE ON bankworker.transactions
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_transaction_currencies();

CREATE TRIGGER currencies_append_only BEFORE UPDATE OR DELETE ON bankworker.currencies
  FOR EACH ROW EXECUTE FUNCTION bankworker.reject_change();
CREATE TRIGGER currencies_no_truncate BEFORE TRUNCATE ON bankworker.currencies
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.reject_change();
