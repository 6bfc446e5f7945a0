-- Keys and the audit chain (issue 4, DESIGN.md §4 and §5): per-tenant key-encryption key versions
-- wrapped by the root key, the audit signing key wrapped by the root key, the per-tenant head of
-- the audit chain, and the one directory function operator commands use to walk every tenant.
SET LOCAL ROLE bankworker_owner;

-- A tenant's key-encryption keys (KEKs). Random 32-byte keys, never stored in the clear: wrapped
-- by the root key named in root_key_id. One version is primary (new secrets are sealed under it);
-- active versions still open what was sealed under them; a retired version wrapped nothing any
-- more and its key is gone; a destroyed version was erased on purpose (tenant offboarding). The
-- row stays in every state, so the audit log's references keep meaning something.
CREATE TABLE bankworker.tenant_keys (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  version integer NOT NULL CHECK (version > 0),
  state text NOT NULL CHECK (state IN ('primary', 'active', 'retired', 'destroyed')),
  root_key_id text NOT NULL CHECK (length(root_key_id) BETWEEN 1 AND 128),
  wrapped_key bytea CHECK (length(wrapped_key) <= 1024),
  created_at timestamptz NOT NULL DEFAULT now(),
  retired_at timestamptz,
  destroyed_at timestamptz,
  PRIMARY KEY (tenant_id, version),
  CHECK ((state IN ('primary', 'active')) = (wrapped_key IS NOT NULL))
);
CREATE UNIQUE INDEX tenant_keys_one_primary ON bankworker.tenant_keys (tenant_id) WHERE state = 'primary';
CALL bankworker.enable_tenant_rls('bankworker.tenant_keys');

-- A sealed secret names the key version it needs; that version must exist.
ALTER TABLE bankworker.sealed_secrets
  ADD CONSTRAINT sealed_secrets_kek_version_exists
  FOREIGN KEY (tenant_id, kek_version) REFERENCES bankworker.tenant_keys (tenant_id, version);

-- The last row of each tenant's audit chain. Appending locks this row (FOR UPDATE), which makes
-- the per-tenant sequence gapless under concurrency; `audit verify` checks that the chain ends
-- exactly here, so rows cut off the end are noticed.
CREATE TABLE bankworker.audit_heads (
  tenant_id uuid NOT NULL REFERENCES bankworker.tenants,
  seq bigint NOT NULL CHECK (seq >= 0),
  hash bytea NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (tenant_id)
);
CALL bankworker.enable_tenant_rls('bankworker.audit_heads');

-- The Ed25519 key that signs audit rows: not tenant data (one key signs every tenant's chain), and
-- separate from every encryption key. Its 32-byte seed is random and stored wrapped by the root
-- key; `audit verify` derives the public key from the seed rather than trusting public_key, so
-- replacing a row here cannot make forged rows verify without the root key.
CREATE TABLE bankworker.audit_signing_keys (
  key_id text PRIMARY KEY CHECK (length(key_id) BETWEEN 1 AND 128),
  public_key bytea NOT NULL CHECK (length(public_key) = 32),
  root_key_id text NOT NULL CHECK (length(root_key_id) BETWEEN 1 AND 128),
  wrapped_seed bytea NOT NULL CHECK (length(wrapped_seed) <= 1024),
  state text NOT NULL CHECK (state IN ('active', 'retired')),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX audit_signing_keys_one_active ON bankworker.audit_signing_keys ((true)) WHERE state = 'active';
REVOKE ALL ON bankworker.audit_signing_keys FROM PUBLIC;

-- Operator commands (keys rewrap, rotate --root, audit verify) walk every tenant, but the worker
-- sees no tenant row unless it names the tenant first. This function, owned by bankworker_owner,
-- lists tenant ids and nothing else; the policy lets only the owner's functions see every tenant.
CREATE POLICY tenant_directory ON bankworker.tenants FOR SELECT TO bankworker_owner USING (true);
CREATE FUNCTION bankworker.tenant_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT tenant_id FROM bankworker.tenants ORDER BY tenant_id
$$;
REVOKE ALL ON FUNCTION bankworker.tenant_ids() FROM PUBLIC;

-- The worker keeps key metadata forever (no DELETE) and never changes signed audit rows.
GRANT SELECT, INSERT, UPDATE ON bankworker.tenant_keys, bankworker.audit_heads,
  bankworker.audit_signing_keys TO bankworker_worker;
GRANT EXECUTE ON FUNCTION bankworker.tenant_ids() TO bankworker_worker;
