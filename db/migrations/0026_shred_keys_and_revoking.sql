-- Revocation destroys (issue 23, part 3): per-secret shred keys, and the age of a revocation that
-- Plaid has not confirmed yet.
--
-- Until now a shred deleted the sealed row while the tenant key that wrapped its data key stayed
-- live, so any copy of the row taken earlier (a backup, a dump, a replica, a dead tuple) opened
-- again. From now on every new secret's data key is wrapped by a key derived from the tenant key
-- AND 32 random bytes of its own, its shred key, kept here in a row apart from the envelope. The
-- shred deletes this row; a copy of the sealed row alone then opens with nothing the system holds
-- (crypto/README.md, "Shredding", gives the reasoning and the backup window).
--
-- Rows sealed before this migration (envelope algorithm 1) have no shred key and keep opening as
-- before; `keys rewrap` reseals them under algorithm 2 (db/keys.cpp).
SET LOCAL ROLE bankworker_owner;

-- One row per algorithm-2 secret. The shred key is stored as it is, not wrapped: on its own it
-- opens nothing (the wrapping key is BLAKE2b keyed with the tenant key), so wrapping it too would
-- add a dependency and no protection; what matters is that it lives in no other row and no other
-- table, and that deleting it is the shred. Deleting the sealed row deletes it as well (cascade),
-- so no path that removes a secret can leave its shred key behind.
CREATE TABLE bankworker.secret_shred_keys (
  tenant_id uuid NOT NULL,
  secret_id uuid NOT NULL,
  shred_key bytea NOT NULL CHECK (length(shred_key) = 32),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, secret_id),
  FOREIGN KEY (tenant_id, secret_id) REFERENCES bankworker.sealed_secrets (tenant_id, secret_id) ON DELETE CASCADE
);
CALL bankworker.enable_tenant_rls('bankworker.secret_shred_keys');
-- The worker seals, opens and shreds; nothing ever updates a shred key (a reseal is a new key).
-- The customer app's role gets nothing here, as for sealed_secrets.
GRANT SELECT, INSERT, DELETE ON bankworker.secret_shred_keys TO bankworker_worker;

-- When the connection entered 'revoking': a revocation waits there, with its token intact, until
-- Plaid confirms /item/remove or says the item is gone. The alert on a stuck revocation is on the
-- age of the oldest such connection, which updated_at cannot give (other updates move it). A
-- trigger keeps it, so every path that changes the status (the worker's statements, a webhook, an
-- operator's SQL) keeps it right: set on entering 'revoking', kept while there, cleared on leaving.
ALTER TABLE bankworker.connections ADD COLUMN revoking_since timestamptz;
UPDATE bankworker.connections SET revoking_since = updated_at WHERE status = 'revoking';

CREATE FUNCTION bankworker.track_revoking_since() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.status <> 'revoking' THEN
    NEW.revoking_since := NULL;
  ELSIF TG_OP = 'INSERT' OR OLD.status <> 'revoking' OR OLD.revoking_since IS NULL THEN
    NEW.revoking_since := now();
  ELSE
    NEW.revoking_since := OLD.revoking_since;
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER connections_revoking_since BEFORE INSERT OR UPDATE ON bankworker.connections
  FOR EACH ROW EXECUTE FUNCTION bankworker.track_revoking_since();

-- For /metrics: how many connections wait in 'revoking' and the age in seconds of the oldest, over
-- every tenant. Counts only, never a tenant or a connection id. Opens the cross-tenant gate (0017)
-- for its own statement only.
CREATE FUNCTION bankworker.revoking_connections(p_now timestamptz)
RETURNS TABLE (connections bigint, oldest_s bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT count(*),
           coalesce(greatest(0, floor(extract(epoch FROM coalesce(p_now, now()) - min(c.revoking_since))))::bigint, 0)
      FROM bankworker.connections c
     WHERE c.status = 'revoking';
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION bankworker.revoking_connections(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.revoking_connections(timestamptz) TO bankworker_worker;
