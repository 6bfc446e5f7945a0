-- A tenant scope the app cannot forge (issue 23, part 1).
--
-- Until now every tenant policy, and the app's request functions, trusted the custom setting
-- bankworker.tenant_id, which any role may set: an SQL injection in one request of the customer's
-- app could name another tenant and read its rows or revoke its bank connection. From here on:
--
-- * bankworker_worker (trusted code, ours) keeps scoping each transaction with SET LOCAL
--   bankworker.tenant_id; the tenant_isolation policies admit it (and the owner's SECURITY
--   DEFINER functions) and nobody else.
-- * bankworker_app is scoped only by a scope token: HMAC-SHA256, under a scope key the app holds
--   in its own configuration, over a canonical text of key id, tenant and expiry. The app opens a
--   transaction with SELECT bankworker.enter_tenant($token); its policies admit a row only when
--   (SELECT bankworker.verified_tenant()) names the row's tenant, and verified_tenant() checks the
--   token held in the transaction again, once per statement. There is no stored "verified" value
--   for the app to overwrite: a token it writes into the setting itself is verified just the same.
--
-- The token (version 1), all ASCII:
--   v1.<key id>.<tenant uuid, lowercase>.<expiry, Unix seconds>.<HMAC, 64 lowercase hex digits>
-- and the MAC is HMAC-SHA256(key, 'bankworker-scope-v1' || '.' || key id || '.' || tenant || '.'
-- || expiry), that is the token up to its last dot with the version word spelled out, so a MAC of
-- another format version can never be confused with this one.
--
-- The HMAC is computed with PostgreSQL's built-in sha256() rather than pgcrypto's hmac(): no
-- extension to create (the migration login may not be allowed to), nothing the app could call with
-- a key it does not have, and the key's two padded blocks (key XOR ipad, key XOR opad) are stored
-- once when the key is added, so verifying costs two sha256() calls and no XOR loop.
SET LOCAL ROLE bankworker_owner;

-- Scope keys: at most two active at once (rotation: add the new key, move the app to it, retire
-- the old one). Owner-only: neither the app nor the worker can read key material; the worker
-- manages keys through the functions below. A retired key stays as a row (its id is never reused,
-- so a token under it is refused as retired, not as unknown), with its material erased.
CREATE TABLE bankworker.scope_keys (
  key_id text PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9_-]{1,32}$'),
  inner_pad bytea CHECK (length(inner_pad) = 64),
  outer_pad bytea CHECK (length(outer_pad) = 64),
  fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{16}$'),
  created_at timestamptz NOT NULL DEFAULT now(),
  retired_at timestamptz,
  CHECK ((retired_at IS NULL) = (inner_pad IS NOT NULL)),
  CHECK ((inner_pad IS NULL) = (outer_pad IS NULL))
);
REVOKE ALL ON bankworker.scope_keys FROM PUBLIC;

-- Verifies a scope token and returns its tenant, or raises one error per reason. The SQLSTATEs are
-- ours (class BW) so the app's code can tell them apart; no message names or shows a key.
CREATE FUNCTION bankworker.verify_scope_token(token text)
RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  part text[];
  expires bigint;
  pads record;
  mac bytea;
BEGIN
  IF length(token) > 256 THEN
    RAISE EXCEPTION 'scope token rejected: longer than scope_token_bytes_max (256)' USING ERRCODE = 'BWT02';
  END IF;
  -- Split and checked piece by piece: one regular expression with bounded repetitions and
  -- captures for the whole token cost ~190 us a call in PostgreSQL's regex engine, these ~3 us.
  part := string_to_array(token, '.');
  IF cardinality(part) IS DISTINCT FROM 5 OR part[1] <> 'v1'
     OR length(part[2]) NOT BETWEEN 1 AND 32 OR part[2] !~ '^[A-Za-z0-9_-]+$'
     OR length(part[3]) <> 36 OR part[3] !~ '^[0-9a-f-]+$' OR length(replace(part[3], '-', '')) <> 32
     OR substr(part[3], 9, 1) <> '-' OR substr(part[3], 14, 1) <> '-' OR substr(part[3], 19, 1) <> '-'
     OR substr(part[3], 24, 1) <> '-'
     OR length(part[4]) > 12 OR part[4] !~ '^[1-9][0-9]*$'
     OR length(part[5]) <> 64 OR part[5] !~ '^[0-9a-f]+$' THEN
    RAISE EXCEPTION 'scope token rejected: malformed (expected v1.<key id>.<tenant>.<expiry>.<hmac>)'
      USING ERRCODE = 'BWT01';
  END IF;
  SELECT k.inner_pad, k.outer_pad, k.retired_at INTO pads FROM bankworker.scope_keys k WHERE k.key_id = part[2];
  IF NOT FOUND THEN
    RAISE EXCEPTION 'scope token rejected: unknown scope key id %', part[2] USING ERRCODE = 'BWT03';
  END IF;
  IF pads.retired_at IS NOT NULL THEN
    RAISE EXCEPTION 'scope token rejected: scope key % was retired', part[2] USING ERRCODE = 'BWT04';
  END IF;
  mac := sha256(pads.outer_pad || sha256(pads.inner_pad || convert_to(
           'bankworker-scope-v1.' || part[2] || '.' || part[3] || '.' || part[4], 'UTF8')));
  -- Constant time: every bit of both MACs is compared (XOR, then a population count), so the time
  -- taken does not depend on where a forged MAC first differs.
  IF bit_count(('x' || encode(mac, 'hex'))::bit(256) # ('x' || part[5])::bit(256)) <> 0 THEN
    RAISE EXCEPTION 'scope token rejected: its MAC does not verify (forged or altered)' USING ERRCODE = 'BWT06';
  END IF;
  expires := part[4]::bigint;
  IF expires <= extract(epoch FROM clock_timestamp()) THEN
    RAISE EXCEPTION 'scope token rejected: expired at %', to_timestamp(expires) USING ERRCODE = 'BWT05';
  END IF;
  IF expires > extract(epoch FROM clock_timestamp()) + 86400 THEN
    RAISE EXCEPTION 'scope token rejected: expires more than scope_token_lifetime_s_max (86400) from now'
      USING ERRCODE = 'BWT07';
  END IF;
  RETURN part[3]::uuid;
END
$$;

-- The tenant of the scope token this transaction holds, verified now; NULL when it holds none (so a
-- transaction without a verified scope sees no tenant row at all). Policies call it as
-- (SELECT bankworker.verified_tenant()), an init plan, so it runs once per statement.
CREATE FUNCTION bankworker.verified_tenant()
RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  token text := current_setting('bankworker.scope_token', true);
BEGIN
  IF token IS NULL OR token = '' THEN
    RETURN NULL;
  END IF;
  RETURN bankworker.verify_scope_token(token);
END
$$;

-- The app opens each transaction with this: it verifies the token, keeps it for the rest of the
-- transaction (SET LOCAL) and returns the tenant. A refused token leaves nothing behind.
CREATE FUNCTION bankworker.enter_tenant(token text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  tenant uuid := bankworker.verify_scope_token(token);
BEGIN
  PERFORM set_config('bankworker.scope_token', token, true);
  RETURN tenant;
END
$$;

-- Inside the app's request functions: the verified tenant must be the one the call names. It is
-- then set for the statements the function runs, the cross-tenant gate is closed whatever the app
-- set it to, and the tenant is returned.
CREATE FUNCTION bankworker.enter_verified_scope(p_tenant uuid)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  scope uuid := bankworker.verified_tenant();
BEGIN
  IF scope IS NULL THEN
    RAISE EXCEPTION 'no verified tenant scope: open the transaction with SELECT bankworker.enter_tenant(token)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_tenant IS NULL OR p_tenant <> scope THEN
    RAISE EXCEPTION 'tenant % is not the tenant of this transaction''s scope token', p_tenant
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
  PERFORM set_config('bankworker.tenant_id', scope::text, true);
  RETURN scope;
END
$$;

-- The worker's own request functions keep the 0003 bodies (scope from SET LOCAL), under names
-- that only the worker may execute.
ALTER FUNCTION bankworker.request_sync(uuid, uuid) RENAME TO enqueue_sync_request;
ALTER FUNCTION bankworker.request_revoke(uuid, uuid) RENAME TO enqueue_revoke_request;
ALTER FUNCTION bankworker.link_plaid(uuid, text) RENAME TO enqueue_link_request;
REVOKE EXECUTE ON FUNCTION bankworker.enqueue_sync_request(uuid, uuid), bankworker.enqueue_revoke_request(uuid, uuid),
  bankworker.enqueue_link_request(uuid, text) FROM bankworker_app;

-- The app's request functions (contract): the same signatures, scoped by the verified token only.
-- enter_verified_scope, evaluated as the argument before the worker's body runs, overwrites
-- bankworker.tenant_id with the verified tenant and closes the cross-tenant gate, so nothing the
-- app wrote into either setting reaches the statements that run as the owner. (A function SET
-- clause would restore both settings afterwards, but PostgreSQL 15 lets only a superuser create
-- one for a placeholder setting; what stays set matters to no policy that admits the app.)
CREATE FUNCTION bankworker.request_sync(tenant uuid, connection uuid) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT bankworker.enqueue_sync_request(bankworker.enter_verified_scope(tenant), connection)
$$;

CREATE FUNCTION bankworker.request_revoke(tenant uuid, connection uuid) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT bankworker.enqueue_revoke_request(bankworker.enter_verified_scope(tenant), connection)
$$;

CREATE FUNCTION bankworker.link_plaid(tenant uuid, public_token text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT bankworker.enqueue_link_request(bankworker.enter_verified_scope(tenant), public_token)
$$;

-- Scope key management, for the worker's CLI (`bankworker scope-key add|list|retire`). Key
-- material goes in and never comes out; list shows ids, states and a fingerprint (the first 8
-- bytes of SHA-256 of the key, which an operator can compare with the app's configuration).
CREATE FUNCTION bankworker.add_scope_key(p_key_id text, p_key bytea)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  padded bytea;
  inner_pad bytea;
  outer_pad bytea;
  i integer;
  fp text;
BEGIN
  IF p_key_id IS NULL OR p_key_id !~ '^[A-Za-z0-9_-]{1,32}$' THEN
    RAISE EXCEPTION 'scope key id must be 1..32 of A-Z a-z 0-9 _ -' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_key IS NULL OR length(p_key) <> 32 THEN
    RAISE EXCEPTION 'a scope key is exactly 32 bytes' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT 1 FROM bankworker.scope_keys WHERE key_id = p_key_id) THEN
    RAISE EXCEPTION 'scope key id % exists already (ids are never reused)', p_key_id USING ERRCODE = 'unique_violation';
  END IF;
  LOCK TABLE bankworker.scope_keys IN SHARE ROW EXCLUSIVE MODE;
  IF (SELECT count(*) FROM bankworker.scope_keys WHERE retired_at IS NULL) >= 2 THEN
    RAISE EXCEPTION 'two scope keys are active already (scope_keys_active_max): retire one first'
      USING ERRCODE = 'program_limit_exceeded';
  END IF;
  padded := p_key || decode(repeat('00', 32), 'hex');
  inner_pad := padded;
  outer_pad := padded;
  FOR i IN 0..63 LOOP
    inner_pad := set_byte(inner_pad, i, get_byte(padded, i) # 54);  -- 0x36
    outer_pad := set_byte(outer_pad, i, get_byte(padded, i) # 92);  -- 0x5c
  END LOOP;
  fp := encode(substring(sha256(p_key) FROM 1 FOR 8), 'hex');
  INSERT INTO bankworker.scope_keys (key_id, inner_pad, outer_pad, fingerprint) VALUES (p_key_id, inner_pad, outer_pad, fp);
  RETURN fp;
END
$$;

CREATE FUNCTION bankworker.list_scope_keys()
RETURNS TABLE (key_id text, fingerprint text, created_at timestamptz, retired_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT k.key_id, k.fingerprint, k.created_at, k.retired_at FROM bankworker.scope_keys k ORDER BY k.created_at, k.key_id
$$;

-- Retiring erases the key material; tokens under the key are refused from the next statement on.
CREATE FUNCTION bankworker.retire_scope_key(p_key_id text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  UPDATE bankworker.scope_keys k SET retired_at = now(), inner_pad = NULL, outer_pad = NULL
   WHERE k.key_id = p_key_id AND k.retired_at IS NULL;
  RETURN FOUND;
END
$$;

-- Every tenant policy made so far admitted any role whose setting named the tenant. From now on it
-- admits the worker and the owner's functions only; the app gets policies of its own below.
DO $$
DECLARE
  target regclass;
BEGIN
  FOR target IN
    SELECT format('%I.%I', p.schemaname, p.tablename)::regclass
      FROM pg_catalog.pg_policies p
     WHERE p.schemaname = 'bankworker' AND p.policyname = 'tenant_isolation'
  LOOP
    EXECUTE format('DROP POLICY tenant_isolation ON %s', target);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %s FOR ALL TO bankworker_worker, bankworker_owner'
      ' USING (tenant_id = nullif(current_setting(''bankworker.tenant_id'', true), '''')::uuid)'
      ' WITH CHECK (tenant_id = nullif(current_setting(''bankworker.tenant_id'', true), '''')::uuid)',
      target);
  END LOOP;
END
$$;

CREATE OR REPLACE PROCEDURE bankworker.enable_tenant_rls(target regclass)
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
  EXECUTE format(
    'CREATE POLICY tenant_isolation ON %s FOR ALL TO bankworker_worker, bankworker_owner'
    ' USING (tenant_id = nullif(current_setting(''bankworker.tenant_id'', true), '''')::uuid)'
    ' WITH CHECK (tenant_id = nullif(current_setting(''bankworker.tenant_id'', true), '''')::uuid)',
    target);
END
$$;

-- What the app may read (0002's grants), row by row through its verified token only.
CREATE POLICY app_scope ON bankworker.accounts FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));
CREATE POLICY app_scope ON bankworker.transactions FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));
CREATE POLICY app_scope ON bankworker.ledger_accounts FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));
CREATE POLICY app_scope ON bankworker.journal_entries FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));
CREATE POLICY app_scope ON bankworker.journal_lines FOR SELECT TO bankworker_app
  USING (tenant_id = (SELECT bankworker.verified_tenant()));

REVOKE ALL ON FUNCTION bankworker.verify_scope_token(text), bankworker.verified_tenant(),
  bankworker.enter_tenant(text), bankworker.enter_verified_scope(uuid),
  bankworker.request_sync(uuid, uuid), bankworker.request_revoke(uuid, uuid), bankworker.link_plaid(uuid, text),
  bankworker.add_scope_key(text, bytea), bankworker.list_scope_keys(), bankworker.retire_scope_key(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.enter_tenant(text), bankworker.verified_tenant(),
  bankworker.request_sync(uuid, uuid), bankworker.request_revoke(uuid, uuid), bankworker.link_plaid(uuid, text)
  TO bankworker_app;
GRANT EXECUTE ON FUNCTION bankworker.add_scope_key(text, bytea), bankworker.list_scope_keys(),
  bankworker.retire_scope_key(text) TO bankworker_worker;
