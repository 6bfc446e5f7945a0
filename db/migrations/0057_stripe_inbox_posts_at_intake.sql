-- The inbox posts events as it stores them (#21): what the posting rules can settle from the body
-- alone is posted in the statement that stores it, and only the rest waits for a poster.
--
-- Under bench/webhook_load every event was inserted received, claimed by a poster (FOR UPDATE),
-- read back with its 2 KB body, posted and updated to posted: per event a second row version with
-- its body, the unposted index's entry, the claim and the mark (pg_stat_statements: mark 37-48 us,
-- claim 16-20 us of PostgreSQL CPU per event). The committer has the body in memory already, so
-- it plans each event with the posting rules (connectors/stripe/intake.hpp) and this function
-- inserts the event already posted (or ignored), with its entries and lines, in one statement the
-- committer sends in autocommit.
--
-- Order. A money object's events post in arrival order, one poster per lane at a time (0046). So
-- the function first takes the posters' own lock of every lane the batch would post in (the same
-- key as connectors/stripe/posting_queue.cpp, pg_try_advisory_xact_lock: a lane a poster holds
-- now is not waited for), then, in a new statement (a new snapshot), keeps only the lanes where no
-- event is waiting (state received: due or in its backoff). Events of any other lane are stored
-- received, for the posters, as before. The committer itself leaves an event received when its
-- plan needs more than its body (a failed plan, a thin event, a leg the API is to fetch, an entry
-- that fails check_entry, a leg it settles), and with it every later event of the batch in the
-- same lane.
--
-- Settlement marks (0043). A posted event's legs whose settlement is unknown are marked awaited,
-- unless the ledger holds their fee or conversion entry already (what settlement_marks::write
-- checks). Events that settle a leg are never posted here (the committer leaves them received),
-- so no mark needs clearing and the batch's own entries settle nothing.
--
-- The entries of the events inserted posted go through bankworker.post_journal_entries (0056): an
-- entry posted before with the same lines is skipped, one with other lines raises BWE01 and the
-- whole statement rolls back; the committer then stores the batch without posting
-- (bankworker.stripe_inbox_store) and the posters meet the conflict, event by event, as before.
-- Returns every event inserted, with its state; duplicates are not returned.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.stripe_inbox_post(
    p_tenant uuid, p_ids text[], p_types text[], p_accounts text[], p_livemodes boolean[], p_created bigint[],
    p_bodies text[], p_lanes smallint[], p_states text[], p_legs text[], p_leg_fees text[], p_leg_fxs text[],
    p_entry_events text[], p_entry_ids uuid[], p_keys text[], p_descriptions text[], p_occurred bigint[],
    p_sources text[], p_metadata text[], p_line_entries uuid[], p_line_nos smallint[], p_line_accounts text[],
    p_line_amounts bigint[], p_line_currencies text[])
RETURNS TABLE (stored_event_id text, stored_state text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  locked smallint[];
  free smallint[];
  stored_ids text[];
  stored_states text[];
  posted_ids text[];
  e_ids uuid[];
  e_keys text[];
  e_descriptions text[];
  e_occurred bigint[];
  e_sources text[];
  e_metadata text[];
BEGIN
  IF p_tenant IS NULL THEN
    RAISE EXCEPTION 'stripe_inbox_post: no tenant' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM set_config('bankworker.tenant_id', p_tenant::text, true);

  SELECT coalesce(array_agg(l.lane), '{}') INTO locked
    FROM (SELECT DISTINCT x.lane FROM unnest(p_lanes, p_states) AS x(lane, st) WHERE x.st IS NOT NULL ORDER BY 1) l
   WHERE pg_try_advisory_xact_lock(
           hashtextextended('stripe.post:' || current_setting('bankworker.tenant_id') || '/' || l.lane::int, 0));
  SELECT coalesce(array_agg(l.lane), '{}') INTO free
    FROM unnest(locked) AS l(lane)
   WHERE NOT EXISTS (SELECT 1 FROM bankworker.stripe_events w
                      WHERE w.tenant_id = p_tenant AND w.posting_lane = l.lane AND w.state = 'received');

  WITH planned AS (
    SELECT e.*, e.lane = ANY(free) AND e.st IS NOT NULL AS now_final
      FROM unnest(p_ids, p_types, p_accounts, p_livemodes, p_created, p_bodies, p_lanes, p_states, p_legs, p_leg_fees,
                  p_leg_fxs) AS e(id, type, account, livemode, created, body, lane, st, legs, fees, fxs)),
  marked AS (
    -- Each key probed by itself, one index look-up each: as a scalar subquery with LIMIT, so the
    -- planner cannot turn it into a join (NOT EXISTS was planned as an anti join over the tenant's
    -- whole journal, from the statistics of a young table, and kept in the function's cached plan).
    SELECT p.*, a.awaited
      FROM planned p
      CROSS JOIN LATERAL (
        SELECT CASE WHEN p.now_final THEN
                 (SELECT array_agg(x.leg ORDER BY x.n)
                    FROM unnest(string_to_array(p.legs, ','), string_to_array(p.fees, ','),
                                string_to_array(p.fxs, ',')) WITH ORDINALITY AS x(leg, fee, fx, n)
                   WHERE (SELECT 1 FROM bankworker.journal_entries j WHERE j.idempotency_key = x.fee LIMIT 1) IS NULL
                     AND (SELECT 1 FROM bankworker.journal_entries j WHERE j.idempotency_key = x.fx LIMIT 1) IS NULL)
               END AS awaited) a),
  inserted AS (
    INSERT INTO bankworker.stripe_events AS s (tenant_id, event_id, type, account, livemode, created_at, body,
                                              posting_lane, state, posted_at, settlement_awaited,
                                              settlement_awaited_since)
    SELECT p_tenant, m.id, m.type, m.account, m.livemode, to_timestamp(m.created), m.body, m.lane,
           CASE WHEN m.now_final THEN m.st ELSE 'received' END,
           CASE WHEN m.now_final AND m.st = 'posted' THEN now() END,
           m.awaited,
           CASE WHEN m.awaited IS NOT NULL THEN now() END
      FROM marked m
    ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING s.event_id, s.state)
  SELECT coalesce(array_agg(i.event_id), '{}'), coalesce(array_agg(i.state), '{}') INTO stored_ids, stored_states
    FROM inserted i;

  SELECT coalesce(array_agg(i.id), '{}') INTO posted_ids
    FROM unnest(stored_ids, stored_states) AS i(id, st) WHERE i.st = 'posted';
  IF cardinality(posted_ids) > 0 AND coalesce(cardinality(p_entry_ids), 0) > 0 THEN
    SELECT array_agg(e.i), array_agg(e.k), array_agg(e.d), array_agg(e.o), array_agg(e.s), array_agg(e.m)
      INTO e_ids, e_keys, e_descriptions, e_occurred, e_sources, e_metadata
      FROM unnest(p_entry_events, p_entry_ids, p_keys, p_descriptions, p_occurred, p_sources, p_metadata)
           AS e(ev, i, k, d, o, s, m)
     WHERE e.ev IN (SELECT unnest(posted_ids));
    IF e_ids IS NOT NULL THEN
      PERFORM bankworker.post_journal_entries(e_ids, e_keys, e_descriptions, e_occurred, e_sources, e_metadata,
                                              p_line_entries, p_line_nos, p_line_accounts, p_line_amounts,
                                              p_line_currencies);
    END IF;
  END IF;
  RETURN QUERY SELECT i.id, i.st FROM unnest(stored_ids, stored_states) AS i(id, st);
END
$$;

REVOKE ALL ON FUNCTION bankworker.stripe_inbox_post(uuid, text[], text[], text[], boolean[], bigint[], text[], smallint[],
    text[], text[], text[], text[], text[], uuid[], text[], text[], bigint[], text[], text[], uuid[], smallint[],
    text[], bigint[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.stripe_inbox_post(uuid, text[], text[], text[], boolean[], bigint[], text[],
    smallint[], text[], text[], text[], text[], text[], uuid[], text[], text[], bigint[], text[], text[], uuid[],
    smallint[], text[], bigint[], text[]) TO bankworker_worker;
