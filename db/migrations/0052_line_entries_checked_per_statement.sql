-- A journal line's entry is checked once per entry of the statement, not once per line (#21).
--
-- The foreign key from journal_lines to journal_entries ran PostgreSQL's referential check for
-- every line: a query through SPI that also takes a KEY SHARE lock on the entry row, writing a WAL
-- record for each line. Under webhook_load (auto_explain, two lines per posted Stripe event) it
-- took about 10 us per line, the largest of the entries statement's triggers.
--
-- Now check_new_lines, which already runs once per INSERT statement on journal_lines, looks each
-- distinct entry of the statement's lines up once, in the same tenant, and refuses the statement
-- with a foreign_key_violation naming the first missing entry. The key's other guard, an entry
-- going away while lines name it, is already kept by journal_entries_immutable and
-- journal_entries_no_truncate (0002): entries are never deleted. The lookup needs no lock for the
-- same reason. An entry of another transaction that has not committed is not seen, so its lines
-- are refused rather than waited for; bankworker inserts an entry and its lines in one statement
-- (0049), so that only tells a foreign writer to do the same.
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
  -- Each entry once, not each line; no lock on the entry: entries are never deleted or changed.
  EXECUTE 'SELECT n.entry_id FROM (SELECT DISTINCT tenant_id, entry_id FROM new_lines) n'
          ' WHERE NOT EXISTS (SELECT 1 FROM bankworker.journal_entries e'
          '                    WHERE e.tenant_id = n.tenant_id AND e.entry_id = n.entry_id)'
          ' ORDER BY n.entry_id LIMIT 1'
    INTO offending;
  IF offending IS NOT NULL THEN
    RAISE EXCEPTION 'journal line names journal entry %, which does not exist', offending
      USING ERRCODE = 'foreign_key_violation';
  END IF;
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

ALTER TABLE bankworker.journal_lines DROP CONSTRAINT journal_lines_tenant_id_entry_id_fkey;
