-- The connection of a bank transaction, checked once per statement instead of once per row.
--
-- After 0012, the foreign key from transactions to connections was the largest per-row cost left
-- in applying a sync: PostgreSQL runs its check as one SPI query per inserted row (plan start-up,
-- an index probe and a FOR KEY SHARE row lock each time); perf on sync_bench showed it as about a
-- fifth of the server's time. One statement-level trigger now checks the currency (0012) and the
-- connection of every row a statement wrote, with one anti-join each over the transition table.
--
-- What the foreign key also guaranteed on the other side is kept by the connections table itself:
-- a connection row is never deleted (revocation keeps it, with its history, as 'revoked'; the
-- crypto-shredding deletes its sealed token, not the row), and its key never changes. Both are
-- refused by triggers, so no transaction can lose its connection.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.transactions DROP CONSTRAINT transactions_tenant_id_connection_id_fkey;

-- Runs as the writer, under its tenant's row-level security: the rows it checks were admitted by
-- the same policy, so the connections it can see are exactly the ones they may name.
CREATE FUNCTION bankworker.check_transaction_references() RETURNS trigger
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
  SELECT n.connection_id::text INTO unknown FROM changed n
   WHERE NOT EXISTS (SELECT 1 FROM bankworker.connections c
                      WHERE c.tenant_id = n.tenant_id AND c.connection_id = n.connection_id)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'connection % of a bank transaction is not in bankworker.connections', unknown
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION bankworker.check_transaction_references() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.check_transaction_references() TO bankworker_worker;

DROP TRIGGER transactions_currency_known_insert ON bankworker.transactions;
DROP TRIGGER transactions_currency_known_update ON bankworker.transactions;
DROP FUNCTION bankworker.check_transaction_currencies();

-- A trigger with a transition table serves one event, hence two.
CREATE TRIGGER transactions_references_insert AFTER INSERT ON bankworker.transactions
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_transaction_references();
CREATE TRIGGER transactions_references_update AFTER UPDATE ON bankworker.transactions
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_transaction_references();

-- Connections are kept for good: no DELETE, no TRUNCATE, and no change of tenant or id. The key
-- check runs after the row is written, so a move to another tenant is still refused by row-level
-- security first, with its usual message.
CREATE FUNCTION bankworker.keep_connection() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION '% on bankworker.connections is not allowed: connections are kept (revoke one instead), and their tenant and id never change', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION bankworker.keep_connection() FROM PUBLIC;

CREATE TRIGGER connections_never_deleted BEFORE DELETE ON bankworker.connections
  FOR EACH ROW EXECUTE FUNCTION bankworker.keep_connection();
CREATE TRIGGER connections_no_truncate BEFORE TRUNCATE ON bankworker.connections
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.keep_connection();
CREATE TRIGGER connections_key_fixed AFTER UPDATE ON bankworker.connections
  FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id OR OLD.connection_id IS DISTINCT FROM NEW.connection_id)
  EXECUTE FUNCTION bankworker.keep_connection();
