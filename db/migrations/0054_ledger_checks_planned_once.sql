-- The ledger's statement triggers keep their plans instead of planning each lookup per statement
-- (#21).
--
-- check_new_entries (0049) and check_new_lines (0047, 0051, 0052) ran their lookups of
-- journal_lines, journal_entries and ledger_accounts through EXECUTE, planned afresh for every
-- INSERT statement: a plan cached while those tables were small could read the whole of them
-- (a sequential scan, or a hash built over the table) for every statement once they were not.
-- Planning three queries per posting batch cost about 0.45 ms per 150 entries for the entries'
-- check alone (warm EXPLAIN ANALYZE), 3 us per posted Stripe event.
--
-- Now each lookup is a scalar subquery per key of the statement's rows (the transition table),
-- which PostgreSQL runs as a subplan per row and never turns into a join or a hash over the
-- table, and the functions run with enable_seqscan off, so the subplan is an index probe whatever
-- the tables' sizes were when the plan was made. The plans are made once per connection and kept.
-- What is refused, the order of the checks and the messages are unchanged.
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.check_new_entries() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
  offending uuid;
  line_count bigint;
BEGIN
  SELECT n.entry_id, c.lines INTO offending, line_count
    FROM new_entries n
   CROSS JOIN LATERAL (SELECT (SELECT count(*) FROM bankworker.journal_lines l
                                WHERE l.tenant_id = n.tenant_id AND l.entry_id = n.entry_id) AS lines) c
   WHERE c.lines < 2
   ORDER BY n.entry_id LIMIT 1;
  IF offending IS NOT NULL THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two, inserted in the entry''s own statement',
      offending, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bankworker.check_new_lines() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
  missing text;
  offending_tenant uuid;
  offending uuid;
  line_count bigint;
  unbalanced text;
BEGIN
  -- Each entry once, not each line; no lock on the entry: entries are never deleted or changed.
  SELECT n.entry_id INTO offending
    FROM (SELECT DISTINCT tenant_id, entry_id FROM new_lines) n
   WHERE (SELECT count(*) FROM bankworker.journal_entries e
           WHERE e.tenant_id = n.tenant_id AND e.entry_id = n.entry_id) = 0
   ORDER BY n.entry_id LIMIT 1;
  IF offending IS NOT NULL THEN
    RAISE EXCEPTION 'journal line names journal entry %, which does not exist', offending
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT n.account_code INTO missing
    FROM (SELECT DISTINCT tenant_id, account_code FROM new_lines) n
   WHERE (SELECT count(*) FROM bankworker.ledger_accounts a
           WHERE a.tenant_id = n.tenant_id AND a.code = n.account_code) = 0
   ORDER BY n.account_code LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'journal line names ledger account %, which does not exist', missing
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT n.currency INTO missing
    FROM (SELECT DISTINCT currency FROM new_lines) n
   WHERE (SELECT count(*) FROM bankworker.currencies c WHERE c.code = n.currency) = 0
   ORDER BY n.currency LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'journal line names currency %, which is not in bankworker.currencies', missing
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  -- Only the statement's lines (0051).
  SELECT n.tenant_id, n.entry_id, n.currency INTO offending_tenant, offending, unbalanced
    FROM new_lines n
   GROUP BY n.tenant_id, n.entry_id, n.currency
  HAVING sum(n.amount_minor) <> 0
   ORDER BY n.entry_id, n.currency LIMIT 1;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  SELECT count(*) INTO line_count FROM bankworker.journal_lines l
   WHERE l.tenant_id = offending_tenant AND l.entry_id = offending;
  IF line_count < 2 THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two', offending, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  RAISE EXCEPTION 'journal entry % does not balance in %', offending, unbalanced
    USING ERRCODE = 'check_violation';
END
$$;
