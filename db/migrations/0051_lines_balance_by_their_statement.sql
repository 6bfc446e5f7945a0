-- The balance check of new journal lines reads only the lines of the statement (#21).
--
-- Since 0047 a statement trigger checks, after each INSERT into journal_lines, that every entry the
-- statement added lines to has at least two lines and balances in each currency, counting the
-- entry's earlier lines too: one index scan of journal_lines per entry, planned afresh for each
-- statement. Under webhook_load (auto_explain) that query was the largest part of posting a Stripe
-- event: about 5 ms per batch of 145 entries.
--
-- The earlier lines need not be read. Every statement that ever inserted lines left each entry it
-- touched balanced in every currency (0047; before it, the same check ran at commit), and lines are
-- never changed or deleted (journal_lines_immutable, journal_lines_no_truncate). So after a
-- statement an entry balances in a currency exactly when the statement's own lines of that entry
-- and currency sum to zero. And since no line has a zero amount (journal_lines_amount_minor_check),
-- lines that sum to zero are at least two: an entry a statement touched and left balanced has at
-- least two lines. The check is now one aggregate over the statement's lines (the transition
-- table), with no lookup in journal_lines; the entry's lines are counted only to word the error.
--
-- What is refused, and the messages, are unchanged: the first offending entry by id, "has N
-- line(s); an entry needs at least two" when it has fewer than two lines in all, otherwise "does
-- not balance in <the first currency that does not>".
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.check_new_lines() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  missing text;
  offending_tenant uuid;
  offending uuid;
  line_count bigint;
  unbalanced text;
BEGIN
  -- The lookups of tables that grow are planned afresh each time (EXECUTE): a plan cached while
  -- they were small would read the whole of them for every statement once they are not.
  EXECUTE 'SELECT n.account_code FROM (SELECT DISTINCT tenant_id, account_code FROM new_lines) n'
          ' WHERE NOT EXISTS (SELECT 1 FROM bankworker.ledger_accounts a'
          '                    WHERE a.tenant_id = n.tenant_id AND a.code = n.account_code)'
          ' ORDER BY n.account_code LIMIT 1'
    INTO missing;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'journal line names ledger account %, which does not exist', missing
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT n.currency INTO missing
    FROM (SELECT DISTINCT currency FROM new_lines) n
   WHERE NOT EXISTS (SELECT 1 FROM bankworker.currencies c WHERE c.code = n.currency)
   ORDER BY n.currency LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'journal line names currency %, which is not in bankworker.currencies', missing
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  -- Only the transition table: nothing here grows with journal_lines, so the cached plan holds.
  SELECT n.tenant_id, n.entry_id, n.currency INTO offending_tenant, offending, unbalanced
    FROM new_lines n
   GROUP BY n.tenant_id, n.entry_id, n.currency
  HAVING sum(n.amount_minor) <> 0
   ORDER BY n.entry_id, n.currency LIMIT 1;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  EXECUTE 'SELECT count(*) FROM bankworker.journal_lines l WHERE l.tenant_id = $1 AND l.entry_id = $2'
    INTO line_count USING offending_tenant, offending;
  IF line_count < 2 THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two', offending, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  RAISE EXCEPTION 'journal entry % does not balance in %', offending, unbalanced
    USING ERRCODE = 'check_violation';
END
$$;
