-- Plaid link, sync and revocation (issue #5).
--
-- A connection can now be 'broken': Plaid no longer accepts its access token
-- (INVALID_ACCESS_TOKEN) although the item was not reported removed. Its data is kept, it is
-- never synced, and an operator is alerted; re-linking replaces the token.
--
-- linked_by_job names the plaid.link job that created the connection, so `plaid link --wait`
-- can print the connection it made.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.connections DROP CONSTRAINT connections_status_check;
ALTER TABLE bankworker.connections ADD CONSTRAINT connections_status_check
  CHECK (status IN ('linking', 'active', 'needs_reauth', 'broken', 'revoking', 'revoked'));
ALTER TABLE bankworker.connections ADD COLUMN linked_by_job bigint;
CREATE INDEX connections_linked_by_job ON bankworker.connections (tenant_id, linked_by_job)
  WHERE linked_by_job IS NOT NULL;

-- The tenant is implied by (tenant_id, connection_id) → connections, whose own foreign key names
-- the tenant; the direct one cost a second row lookup for every transaction a sync stores.
ALTER TABLE bankworker.transactions DROP CONSTRAINT transactions_tenant_id_fkey;

-- A job's state and last error, for `--wait` on the plaid and connections commands. The worker
-- sees the jobs table only through functions; this one answers for one job of one tenant. No row:
-- the job does not exist (or a finished job was pruned).
CREATE FUNCTION bankworker.job_outcome(p_tenant uuid, p_job_id bigint)
RETURNS TABLE (state text, failure text, last_error text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT j.state, j.failure, j.last_error FROM bankworker.jobs j
   WHERE j.tenant_id = p_tenant AND j.job_id = p_job_id
$$;
REVOKE ALL ON FUNCTION bankworker.job_outcome(uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.job_outcome(uuid, bigint) TO bankworker_worker;

-- Unofficial currencies Plaid reports in unofficial_currency_code, each with a declared exponent
-- (issue #5: amounts with more precision than declared are refused, never rounded). Bitcoin is
-- counted in satoshi (8 decimals). Currencies whose smallest unit would overflow a bigint within
-- realistic balances (ether's 18 decimals) are deliberately absent: their transactions are
-- refused with a clear error until someone declares an exponent the books can hold.
INSERT INTO bankworker.currencies (code, exponent, iso) VALUES ('BTC', 8, false);
