-- A journal entry's lines must come in the statement that inserts the entry (#21); the check that
-- every entry has lines runs once per statement instead of once per entry at commit.
--
-- Until now each entry queued a deferred constraint trigger (journal_entry_balanced) that, at
-- commit, counted and summed the entry's lines: one plpgsql call and one query per entry, about
-- 8 us per posted Stripe event under webhook_load (pg_stat_statements). Since 0047 the lines' own
-- statement trigger checks the balance whenever lines are inserted, so the deferred check's only
-- remaining job was to refuse an entry that never got lines. bankworker now inserts a batch's
-- entries and their lines in one statement (ledger.cpp), so that job can be done once, at the end
-- of the statement, over all the entries it inserted (a transition table).
--
-- Rule change: an entry and its lines arrive in one statement (a data-modifying CTE, as ledger.cpp
-- does). An INSERT of entries whose lines come in a later statement is refused at once, where
-- before it was refused only if the lines never came before commit. That is stricter: no entry is
-- ever without its lines, even inside a transaction. Lines may still be added to an existing entry
-- later, balanced within their own statement (0047).
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.check_new_entries() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  offending uuid;
  line_count bigint;
BEGIN
  -- Planned per statement (EXECUTE), as in check_new_lines: journal_lines grows.
  EXECUTE 'SELECT n.entry_id, (SELECT count(*) FROM bankworker.journal_lines l'
          '                     WHERE l.tenant_id = n.tenant_id AND l.entry_id = n.entry_id) AS lines'
          ' FROM new_entries n'
          ' WHERE (SELECT count(*) FROM bankworker.journal_lines l'
          '         WHERE l.tenant_id = n.tenant_id AND l.entry_id = n.entry_id) < 2'
          ' ORDER BY n.entry_id LIMIT 1'
    INTO offending, line_count;
  IF offending IS NOT NULL THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two, inserted in the entry''s own statement',
      offending, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER journal_entries_have_lines AFTER INSERT ON bankworker.journal_entries
  REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_new_entries();
DROP TRIGGER journal_entry_balanced ON bankworker.journal_entries;
DROP FUNCTION bankworker.check_entry_balanced();
