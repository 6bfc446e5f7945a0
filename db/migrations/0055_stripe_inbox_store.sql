-- One statement stores a batch of one tenant's webhook events: the inbox's committer makes one
-- round trip per batch instead of four (#21).
--
-- Under bench/webhook_load the committer ran BEGIN, the tenant scope's set_config, the INSERT and
-- COMMIT, each a round trip to the server and back (strace of the committer thread: 0.2, 0.3, 1.3
-- and 2.6 ms of a 7 ms cycle, the last being the WAL flush). 64 senders wait on that cycle, so
-- every round trip the batch does not need is latency for all of them, and a send, a poll and a
-- receive on both sides.
--
-- bankworker.stripe_inbox_store sets the tenant scope (transaction-local, as db/tenant_scope.hpp
-- does) and inserts the events; the committer calls it in autocommit when a batch holds one
-- tenant's events and nothing else, so the call's implicit transaction commits before the server
-- answers (the durability of a COMMIT: the answer comes after the WAL flush). A batch that needs
-- more (platform events routed by account, several tenants) runs it inside a transaction as
-- before. The function runs with the caller's rights: row-level security admits only the scoped
-- tenant's rows, exactly as the INSERT it replaces.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.stripe_inbox_store(p_tenant uuid, p_ids text[], p_types text[], p_accounts text[],
                                              p_livemodes boolean[], p_created bigint[], p_bodies text[],
                                              p_lanes smallint[])
RETURNS SETOF text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF p_tenant IS NULL THEN
    RAISE EXCEPTION 'stripe_inbox_store: no tenant' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.tenant_id', p_tenant::text, true);
  RETURN QUERY
    INSERT INTO bankworker.stripe_events AS s (tenant_id, event_id, type, account, livemode, created_at, body,
                                              posting_lane)
    SELECT p_tenant, e.id, e.type, e.account, e.livemode, to_timestamp(e.created), e.body, e.lane
      FROM unnest(p_ids, p_types, p_accounts, p_livemodes, p_created, p_bodies, p_lanes)
           AS e(id, type, account, livemode, created, body, lane)
    ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING s.event_id;
END
$$;

REVOKE ALL ON FUNCTION bankworker.stripe_inbox_store(uuid, text[], text[], text[], boolean[], bigint[], text[], smallint[])
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.stripe_inbox_store(uuid, text[], text[], text[], boolean[], bigint[], text[], smallint[])
  TO bankworker_worker;
