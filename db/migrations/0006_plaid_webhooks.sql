-- Plaid webhook routing.
--
-- POST /webhooks/plaid carries only Plaid's item_id; which tenant and connection it belongs to is
-- not known until the item is looked up, and the worker cannot see other tenants' connections
-- under row-level security. This function reads across tenants and returns the ids and status of
-- the connections holding the item, nothing else; the effect itself (request_sync, the status
-- change, request_revoke) then runs in a transaction scoped to the tenant it names.
SET LOCAL ROLE bankworker_owner;

-- connections is unique on (tenant_id, item_id), not on item_id alone: the same item may in
-- principle be linked by two tenants (a sandbox item, a shared test login), so every match is
-- returned, at most 16 of them.
CREATE FUNCTION bankworker.plaid_item_connection(item_id text)
RETURNS TABLE (tenant_id uuid, connection_id uuid, status text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT c.tenant_id, c.connection_id, c.status
    FROM bankworker.connections c
   WHERE c.item_id = plaid_item_connection.item_id
   ORDER BY c.tenant_id, c.connection_id
   LIMIT 16
$$;
REVOKE ALL ON FUNCTION bankworker.plaid_item_connection(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.plaid_item_connection(text) TO bankworker_worker;

-- Finding connections by item across tenants: the unique index leads with tenant_id, so this one
-- serves the lookup above.
CREATE INDEX connections_item_id ON bankworker.connections (item_id) WHERE item_id IS NOT NULL;
