-- Postings awaiting settlement (issue #16): a Stripe event whose legs were posted on their
-- presentment side only, because the balance transaction of a leg was neither in the webhook body
-- nor fetchable (no API key for the tenant). Nothing is guessed: the presentment entry (ch_…:gross
-- in KWD, say) is in the ledger, the conversion and fee entries (ch_…:fx, ch_…:fee) are not, and
-- the event row says so until they are.
--
--   settlement_awaited_since  when the event was first posted with a leg awaiting settlement;
--                             null: nothing awaited (the usual case);
--   settlement_awaited        the legs still awaited, as their presentment entries' keys
--                             (ch_…:gross, re_…:refund, dp_…:withdrawn): the money object's id
--                             says which balance transaction is missing.
--
-- The posting that learns a leg's balance transaction (a later event carrying it, or a stripe.post
-- re-run by the recovery job once a key is configured) clears the leg in the same transaction as
-- its conversion and fee entries, from every event awaiting it.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.stripe_events
  ADD COLUMN settlement_awaited_since timestamptz,
  ADD COLUMN settlement_awaited text[]
    CONSTRAINT stripe_events_settlement_awaited_check
    CHECK (cardinality(settlement_awaited) BETWEEN 1 AND 400),
  ADD CONSTRAINT stripe_events_settlement_awaited_both
    CHECK ((settlement_awaited_since IS NULL) = (settlement_awaited IS NULL));

-- The awaiting events per tenant, oldest first: the recovery job's pick, the gauges and
-- `stripe events list --awaiting-settlement`. Partial, so it is as small as what is awaited.
CREATE INDEX stripe_events_settlement_awaited ON bankworker.stripe_events (tenant_id, settlement_awaited_since)
  WHERE settlement_awaited_since IS NOT NULL;
-- Which events await a leg: every posting that settles legs asks (settlement_awaited && keys).
-- Partial too: empty, it answers without touching the table.
CREATE INDEX stripe_events_settlement_awaited_legs ON bankworker.stripe_events USING gin (settlement_awaited)
  WHERE settlement_awaited_since IS NOT NULL;

-- Events awaiting settlement across tenants, and the oldest one's age in seconds (0: none), for
-- the gauges (bankworker_stripe_awaiting_settlement_*). Counts only, like inbox_gauges.
CREATE FUNCTION bankworker.stripe_settlement_gauges()
RETURNS TABLE (events bigint, oldest_s bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
BEGIN
  PERFORM set_config('bankworker.cross_tenant', 'on', true);
  RETURN QUERY
    SELECT count(*), coalesce(greatest(0, floor(extract(epoch FROM now() - min(e.settlement_awaited_since))))::bigint, 0)
      FROM bankworker.stripe_events e
     WHERE e.settlement_awaited_since IS NOT NULL;
  PERFORM set_config('bankworker.cross_tenant', 'off', true);
END
$$;

REVOKE ALL ON FUNCTION bankworker.stripe_settlement_gauges() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.stripe_settlement_gauges() TO bankworker_worker;
