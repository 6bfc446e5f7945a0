-- The tenant of a new Stripe event or journal entry is checked once per statement instead of once
-- per row (#21).
--
-- stripe_events and journal_entries are the two tables every webhook writes to: the inbox inserts
-- each event, a poster each entry. Their foreign keys to tenants ran PostgreSQL's referential check
-- for every row: a query through SPI that takes a KEY SHARE lock on the tenant's row. Under
-- webhook_load all of them lock the same row (one tenant, the inbox's committer and the posters at
-- once), so the row's lock is a multixact that every check must look into and that each new
-- transaction extends. auto_explain put these checks at about 18 us per event in the inbox insert
-- and 9 us per entry in the posting.
--
-- Row-level security already fixes the tenant of every row such a statement can insert: the
-- tenant_isolation policy (FORCE ROW LEVEL SECURITY) admits only rows whose tenant_id is the
-- transaction's bankworker.tenant_id, for the worker and the owner alike (a superuser bypasses row
-- security, as it can bypass any trigger or key). So checking that one tenant once per statement
-- is checking every row's:
--
--   check_scoped_tenant   AFTER INSERT FOR EACH STATEMENT on both tables: when the statement ran
--                         under a tenant scope, that tenant's row must exist, and it is locked
--                         FOR KEY SHARE until the transaction ends, as the foreign key locked it
--                         for each row: a tenant cannot be deleted under rows being inserted.
--   keep_tenant_with_rows BEFORE DELETE on tenants: a tenant that still has Stripe events or
--                         journal entries is not deleted (the keys' NO ACTION). It runs after the
--                         delete has waited for the inserters' locks, and its lookups take a fresh
--                         snapshot, so it sees the rows they committed.
--
-- The other tables keep their foreign keys to tenants. Both refusals raise foreign_key_violation.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.check_scoped_tenant() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  scoped uuid := nullif(current_setting('bankworker.tenant_id', true), '')::uuid;
BEGIN
  -- Without a scope, row security let no row in (tenant_id = NULL holds for none).
  IF scoped IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM 1 FROM bankworker.tenants t WHERE t.tenant_id = scoped FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'insert into %.% names tenant %, which does not exist', TG_TABLE_SCHEMA, TG_TABLE_NAME, scoped
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER stripe_events_tenant_exists AFTER INSERT ON bankworker.stripe_events
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_scoped_tenant();
CREATE TRIGGER journal_entries_tenant_exists AFTER INSERT ON bankworker.journal_entries
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_scoped_tenant();

CREATE FUNCTION bankworker.keep_tenant_with_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  scope text := current_setting('bankworker.tenant_id', true);
  has_rows boolean;
BEGIN
  -- Row security shows the deleter only its scope's rows: look in the deleted tenant's scope.
  PERFORM set_config('bankworker.tenant_id', OLD.tenant_id::text, true);
  has_rows := EXISTS (SELECT 1 FROM bankworker.stripe_events e WHERE e.tenant_id = OLD.tenant_id)
              OR EXISTS (SELECT 1 FROM bankworker.journal_entries e WHERE e.tenant_id = OLD.tenant_id);
  PERFORM set_config('bankworker.tenant_id', coalesce(scope, ''), true);
  IF has_rows THEN
    RAISE EXCEPTION 'tenant % still has Stripe events or journal entries; it cannot be deleted', OLD.tenant_id
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN OLD;
END
$$;

CREATE TRIGGER tenants_keep_rows BEFORE DELETE ON bankworker.tenants
  FOR EACH ROW EXECUTE FUNCTION bankworker.keep_tenant_with_rows();

ALTER TABLE bankworker.stripe_events DROP CONSTRAINT stripe_events_tenant_id_fkey;
ALTER TABLE bankworker.journal_entries DROP CONSTRAINT journal_entries_tenant_id_fkey;
