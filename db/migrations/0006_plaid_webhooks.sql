-- Plaid webhook routing.
--
-- POST /webhooks/plaid carries only Plaid's item_id; which tenant and connection it belongs to is
-- not known until the item is looked up, and the worker cannot see other tenants' connections
-- under row-level security. This function reads across tenants and returns the ids and status of
-- the connections holding the item, nothing else; the effect itself (request_sync, the status
-- change, request_revoke) then runs in a transaction scoped to the tenant it names.
SET LOCAL ROLE bankworker_owner;

-- Row-level security is forced on connections, so even this function's owner sees no row without
-- a tenant scope. One narrow policy lets the owner read connections only while
-- bankworker.item_routing is on, which only this function turns on (and off again before it
-- returns; an error ends the transaction and the local setting with it). The worker and the app
-- never act as the owner, so setting the variable themselves shows them nothing; the owner's other
-- work (migrations) still sees tenant rows only under a tenant scope. (A function-level
-- SET bankworker.item_routing = 'on' would be neater, but PostgreSQL 15 refuses placeholder
-- variables in a non-superuser's function definition.)
CREATE POLICY item_routing ON bankworker.connections FOR SELECT TO bankworker_owner
  USING (current_setting('bankworker.item_routing', true) = 'on');

-- connections is unique on (tenant_id, item_id), not on item_id alone: the same item may in
-- principle be linked by two tenants (a sandbox item, a shared test login), so every match is
-- returned, at most 16 of them.
CREATE FUNCTION bankworker.plaid_item_connection(item_id text)
RETURNS TABLE (tenant_id uuid, connection_id uuid, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM set_config('bankworker.item_routing', 'on', true);
  RETURN QUERY
    SELECT c.tenant_id, c.connection_id, c.status
      FROM bankworker.connections c
     WHERE c.item_id = plaid_item_connection.item_id
     ORDER BY c.tenant_id, c.connection_id
     LIMIT 16;
  PERFORM set_config('bankworker.item_routing', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION bankworker.plaid_item_connection(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.plaid_item_connection(text) TO bankworker_worker;

-- Finding connections by item across tenants: the unique index leads with tenant_id, so this one
-- serves the lookup above.
CREATE INDEX connections_item_id ON bankworker.connections (item_id) WHERE item_id IS NOT NULL;
