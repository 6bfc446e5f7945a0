-- The ledger's line rules are checked once per statement rather than once per line (#21).
--
-- Under bench/webhook_load a posted Stripe event is one journal entry of two lines, and until now
-- each of those lines paid for three foreign-key checks (entry, account, currency: each a lookup
-- that also takes a KEY SHARE lock on the row it finds, so concurrent posting lanes of one tenant
-- kept locking the same account and currency rows) and queued a deferred constraint trigger that
-- re-read the entry's lines at commit; with the entry's own trigger that was three balance checks
-- per event. pg_stat_statements put the lines insert at 44 us per event and the deferred checks at
-- 18 us more. A scratch database with this migration's rules against the old ones (pgbench,
-- batches of 250 two-line entries) did the same work in about half the time.
--
-- What changes:
-- 1. A statement-level trigger on journal_lines checks, once per INSERT statement, over the rows
--    it inserted (a transition table): every account and currency exists, and every entry a line
--    was added to has at least two lines and balances in each currency, counting its earlier
--    lines too. The messages are the ones check_entry_balanced gave.
-- 2. So an entry's lines must balance at the end of each statement that inserts any of them, where
--    before they had to balance only at commit. bankworker inserts each entry's lines in one
--    statement (ledger.cpp); a writer that adds one line per statement must now add them in one.
--    That is the stricter rule: an unbalanced entry never exists, even inside a transaction.
-- 3. The per-line deferred trigger (journal_line_balanced) is dropped. The entry's deferred
--    trigger stays: an entry that got no lines at all is still refused at commit.
-- 4. The account and currency foreign keys are dropped: (1) checks existence at insert, and what
--    the keys also guarded, the referenced rows going away, is guarded by triggers: currencies were
--    append-only already (0002), ledger accounts now are too as far as their key goes (no delete,
--    no truncate, no change of tenant_id or code; name and kind may change). The key from a line
--    to its entry stays.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.check_new_lines() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  missing text;
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
  EXECUTE 'SELECT e.entry_id, e.line_count, e.unbalanced'
          ' FROM (SELECT t.entry_id, sum(c.lines) AS line_count,'
          '              min(c.currency) FILTER (WHERE c.total <> 0) AS unbalanced'
          '         FROM (SELECT DISTINCT tenant_id, entry_id FROM new_lines) t'
          '        CROSS JOIN LATERAL (SELECT l.currency, count(*) AS lines, sum(l.amount_minor) AS total'
          '                              FROM bankworker.journal_lines l'
          '                             WHERE l.tenant_id = t.tenant_id AND l.entry_id = t.entry_id'
          '                             GROUP BY l.currency) c'
          '        GROUP BY t.entry_id) e'
          ' WHERE e.line_count < 2 OR e.unbalanced IS NOT NULL'
          ' ORDER BY e.entry_id LIMIT 1'
    INTO offending, line_count, unbalanced;
  IF offending IS NULL THEN
    RETURN NULL;
  END IF;
  IF line_count < 2 THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two', offending, line_count
      USING ERRCODE = 'check_violation';
  END IF;
  RAISE EXCEPTION 'journal entry % does not balance in %', offending, unbalanced
    USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER journal_lines_checked AFTER INSERT ON bankworker.journal_lines
  REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION bankworker.check_new_lines();
DROP TRIGGER journal_line_balanced ON bankworker.journal_lines;

ALTER TABLE bankworker.journal_lines DROP CONSTRAINT journal_lines_currency_fkey,
  DROP CONSTRAINT journal_lines_tenant_id_account_code_fkey;

CREATE FUNCTION bankworker.keep_ledger_account() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION '% on bankworker.ledger_accounts is not allowed: journal lines name accounts by tenant and code, so an account is never removed and its tenant and code never change', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

-- AFTER, as connections_key_fixed (0002): row-level security refuses moving a row to another tenant
-- first, with its own message.
CREATE TRIGGER ledger_accounts_key_fixed AFTER UPDATE ON bankworker.ledger_accounts FOR EACH ROW
  WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id OR OLD.code IS DISTINCT FROM NEW.code)
  EXECUTE FUNCTION bankworker.keep_ledger_account();
CREATE TRIGGER ledger_accounts_never_deleted BEFORE DELETE ON bankworker.ledger_accounts FOR EACH ROW
  EXECUTE FUNCTION bankworker.keep_ledger_account();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON bankworker.ledger_accounts
  FOR EACH STATEMENT EXECUTE FUNCTION bankworker.keep_ledger_account();
