-- What a Stripe posting batch pays for in PostgreSQL beyond its own rows (#21), measured with
-- pg_stat_statements and auto_explain under bench/webhook_load (250 events, 500 lines per batch):
--
-- 1. The payout trigger (0034, reshaped in 0035 and 0040) ran for every statement that inserted
--    journal lines and looked the statement's entries up in journal_entries with
--    `tenant_id = ANY($1) AND entry_id = ANY($2)`. Planned against a journal whose statistics were
--    taken when it was small, that lookup walked the (tenant_id, idempotency_key) index over every
--    entry of the tenant: 6–10 ms per batch after 36,000 events, and growing with the journal. A
--    payout is known by its entry's idempotency key alone, so the check now sits on the entry row
--    itself: a deferred constraint trigger whose WHEN clause PostgreSQL evaluates in C for each new
--    entry, calling a function only for a payout (or a failed payout) entry. Deferred, it runs at
--    commit, when the entry's lines are in (they are inserted after it, in the same transaction);
--    it reads them by the lines' primary key (tenant_id, entry_id, line_no). Entries that already
--    existed (ON CONFLICT DO NOTHING) insert nothing and fire nothing, as before.
-- 2. journal_lines carried a foreign key to tenants besides the one to its entry
--    (tenant_id, entry_id), which already implies the tenant exists: one more RI check per line
--    (72,000 per 10 s of the bench) proving nothing new. It is dropped; the line's tenant is still
--    its entry's, by the composite key.

DROP TRIGGER journal_lines_payouts ON bankworker.journal_lines;
DROP FUNCTION bankworker.note_payout_lines();

CREATE FUNCTION bankworker.note_payout_entry() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.idempotency_key LIKE '%:payout' THEN
    INSERT INTO bankworker.reconcile_payouts (tenant_id, payout_id, entry_id, ledger_account, amount_minor, currency,
                                              expected_on, descriptor)
    SELECT l.tenant_id, left(NEW.idempotency_key, -7), l.entry_id, l.account_code, l.amount_minor, l.currency,
           coalesce(bankworker.payout_arrival_day(NEW.metadata), (NEW.occurred_at AT TIME ZONE 'UTC')::date),
           nullif(left(NEW.metadata->>'statement_descriptor', 256), '')
      FROM bankworker.journal_lines l
     WHERE l.tenant_id = NEW.tenant_id AND l.entry_id = NEW.entry_id AND l.amount_minor > 0
    ON CONFLICT (tenant_id, payout_id) DO NOTHING;
  ELSE
    UPDATE bankworker.reconcile_payouts p SET failed = true
      FROM bankworker.journal_lines l
     WHERE l.tenant_id = NEW.tenant_id AND l.entry_id = NEW.entry_id AND l.amount_minor < 0
       AND p.tenant_id = NEW.tenant_id AND p.payout_id = left(NEW.idempotency_key, -14) AND NOT p.failed;
  END IF;
  PERFORM bankworker.enqueue_reconcile(ARRAY[NEW.tenant_id]);
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER journal_entry_payout AFTER INSERT ON bankworker.journal_entries
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (NEW.idempotency_key LIKE '%:payout' OR NEW.idempotency_key LIKE '%:payout_failed')
  EXECUTE FUNCTION bankworker.note_payout_entry();

REVOKE ALL ON FUNCTION bankworker.note_payout_entry() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.note_payout_entry() TO bankworker_worker;

ALTER TABLE bankworker.journal_lines DROP CONSTRAINT journal_lines_tenant_id_fkey;

-- 3. The posters' claim orders a tenant's waiting events by (received_at, event_id) (a group commit
--    gives many events one received_at; event_id makes the order total). The partial index had
--    only (tenant_id, received_at), so every claim read all of the tenant's waiting events, 2 KB
--    bodies included, and sorted them before taking 256: 1 ms per claim at a backlog of 200, 39 ms
--    at 15,000, so the further posting fell behind, the slower it went. With event_id in the index
--    the claim reads its 256 rows in order and stops.
DROP INDEX bankworker.stripe_events_unposted;
CREATE INDEX stripe_events_unposted ON bankworker.stripe_events (tenant_id, received_at, event_id)
  WHERE state IN ('received', 'fetching');

-- 4. Every journal line's foreign key check reads its currency from bankworker.currencies. The
--    table holds ~190 short rows on one page, so the planner reads it whole for each check (a
--    sequential scan comparing up to 190 codes: 12 µs per line, against 2 µs for the ledger
--    account's index probe beside it). The table is read only by its key and written by a person
--    (`currencies add`), so its rows are spread thin (fillfactor 10, rewritten now): at a dozen
--    pages the primary key's probe is the cheaper plan, and every check takes it.
ALTER TABLE bankworker.currencies SET (fillfactor = 10);
CLUSTER bankworker.currencies USING currencies_pkey;
ANALYZE bankworker.currencies;
