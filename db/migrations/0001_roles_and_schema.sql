-- Roles, schema ownership and the helper later migrations use to put a table under tenant RLS.
--
-- Roles are cluster-wide while migrations run per database, so creating them must tolerate another
-- database of the same cluster having created them already (or doing so at this very moment).
DO $$
DECLARE
  role_name text;
BEGIN
  FOREACH role_name IN ARRAY ARRAY['bankworker_owner', 'bankworker_worker', 'bankworker_app'] LOOP
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', role_name);
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;  -- created concurrently by a migration of another database
    END;
  END LOOP;
END
$$;

-- A pre-existing role with superuser or BYPASSRLS would silently void every tenant policy.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
             WHERE rolname IN ('bankworker_worker', 'bankworker_app') AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'bankworker_worker and bankworker_app must not be superusers or have BYPASSRLS';
  END IF;
END
$$;

ALTER SCHEMA bankworker OWNER TO bankworker_owner;
ALTER TABLE bankworker.schema_migrations OWNER TO bankworker_owner;
REVOKE ALL ON SCHEMA bankworker FROM PUBLIC;
GRANT USAGE ON SCHEMA bankworker TO bankworker_worker, bankworker_app;
REVOKE ALL ON bankworker.schema_migrations FROM PUBLIC;
GRANT SELECT ON bankworker.schema_migrations TO bankworker_worker;

SET LOCAL ROLE bankworker_owner;

-- Puts a tenant table under row-level security: enabled and forced (so the owner is bound too),
-- with one policy for every command that admits a row only when its tenant_id is the tenant the
-- transaction set with SET LOCAL bankworker.tenant_id. No tenant set means no row at all.
CREATE PROCEDURE bankworker.enable_tenant_rls(target regclass)
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
  EXECUTE format(
    'CREATE POLICY tenant_isolation ON %s FOR ALL'
    ' USING (tenant_id = nullif(current_setting(''bankworker.tenant_id'', true), '''')::uuid)'
    ' WITH CHECK (tenant_id = nullif(current_setting(''bankworker.tenant_id'', true), '''')::uuid)',
    target);
END
$$;
REVOKE ALL ON PROCEDURE bankworker.enable_tenant_rls(regclass) FROM PUBLIC;

-- Rejects UPDATE, DELETE and TRUNCATE on append-only tables (journal, audit) for every role.
CREATE FUNCTION bankworker.reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% on %.% is not allowed: rows are immutable', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION bankworker.reject_change() FROM PUBLIC;
