-- One cross-tenant gate instead of two.
--
-- 0006 let plaid_item_connection read connections across tenants through a policy of its own,
-- item_routing, opened by the setting bankworker.item_routing; 0007 then introduced the general
-- gate, the cross_tenant_machinery policies opened by bankworker.cross_tenant, which the scheduler,
-- the rate limiter and the Connect routing functions use. Two gates are two things to audit for
-- the same promise (only the owner's SECURITY DEFINER functions see across tenants, each only for
-- its own statements), so the item lookup now opens the general gate and its own policy is gone.
-- The function's contract is unchanged: the ids and status of the connections holding the item,
-- at most 16, and the gate closed again before it returns (an error ends the transaction, and the
-- local setting with it). The runtime role still sees nothing by setting the variable itself:
-- every cross_tenant_machinery policy names bankworker_owner.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.plaid_item_connection(item_id text)
RETURNS TABLE (tenant_id uuid, connection_id uuid, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT c.tenant_id, c.connection_id, c.status
      FROM bankworker.connections c
     WHERE c.item_id = plaid_item_connection.item_id
     ORDER BY c.tenant_id, c.connection_id
     LIMIT 16;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

DROP POLICY item_routing ON bankworker.connections;
