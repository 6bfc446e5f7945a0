-- The balance check at commit reads an entry's lines once instead of twice.
--
-- check_entry_balanced runs at commit once for every journal entry and once for every line
-- inserted (deferred constraint triggers fire per row), and each run made two passes over the
-- entry's lines: one to count them, one to sum them per currency. Under webhook_load it ran
-- about three times per posted event at 82-85 us a call (pg_stat_user_functions). One grouped
-- pass now gives both the line count and the first unbalanced currency. What it refuses, and the
-- messages, are unchanged (the currency named for an unbalanced entry is the first in order).
SET LOCAL ROLE bankworker_owner;

CREATE OR REPLACE FUNCTION bankworker.check_entry_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  line_count integer;
  unbalanced text;
BEGIN
  SELECT coalesce(sum(c.lines), 0), min(c.currency) FILTER (WHERE c.total <> 0)
    INTO line_count, unbalanced
    FROM (SELECT l.currency, count(*) AS lines, sum(l.amount_minor) AS total
            FROM bankworker.journal_lines l
           WHERE l.tenant_id = NEW.tenant_id AND l.entry_id = NEW.entry_id
           GROUP BY l.currency) c;
  IF line_count < 2 THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two', NEW.entry_id, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  IF unbalanced IS NOT NULL THEN
    RAISE EXCEPTION 'journal entry % does not balance in %', NEW.entry_id, unbalanced
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END
$$;
