-- The ledger's one way to insert entries and their lines, as a function (#21): ledger::post_entries
-- calls it, and so does the Stripe inbox when it posts events as it stores them (migration 0057),
-- so the SQL that writes the journal lives here once.
--
-- bankworker.post_journal_entries(entries…, lines…) inserts the entries (a key posted before is
-- skipped) and the lines of the entries it inserted, in one statement, so the statement triggers
-- of 0047/0049 see each new entry with its lines. Entries go in key order whatever order they
-- came in: every caller takes the keys' index locks in the same order, so two transactions that
-- post overlapping keys (two events about one charge) wait for each other instead of deadlocking.
-- Then, for every entry it did not insert (posted before, or given twice in this call), it compares
-- the lines stored under that key with the lines given, in order: a difference raises SQLSTATE
-- BWE01 ("entry … was already posted with different lines"), which ledger::post_entries turns into
-- ledger::entry_conflict; the caller's transaction is then aborted and rolls back. Returns how
-- many entries were inserted.
--
-- The entry ids come from the caller (time-ordered uuids, crypto::time_ordered_uuids), so the
-- lines need no answer from the entries first. The function runs with the caller's rights in the
-- caller's tenant scope: row-level security admits only that tenant's rows.
SET LOCAL ROLE bankworker_owner;

CREATE FUNCTION bankworker.post_journal_entries(p_ids uuid[], p_keys text[], p_descriptions text[],
                                                p_occurred bigint[], p_sources text[], p_metadata text[],
                                                p_line_entries uuid[], p_line_nos smallint[], p_line_accounts text[],
                                                p_line_amounts bigint[], p_line_currencies text[])
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  inserted uuid[];
  conflicting text;
BEGIN
  WITH new_entries AS (
    INSERT INTO bankworker.journal_entries (tenant_id, entry_id, idempotency_key, description, occurred_at, source,
                                            metadata)
    SELECT nullif(current_setting('bankworker.tenant_id', true), '')::uuid, e.i, e.k, e.d, to_timestamp(e.o),
           nullif(e.s, ''), nullif(e.m, '')::jsonb
      FROM unnest(p_ids, p_keys, p_descriptions, p_occurred, p_sources, p_metadata) AS e(i, k, d, o, s, m)
     ORDER BY e.k
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING entry_id),
  new_lines AS (
    INSERT INTO bankworker.journal_lines (tenant_id, entry_id, line_no, account_code, amount_minor, currency)
    SELECT nullif(current_setting('bankworker.tenant_id', true), '')::uuid, l.e, l.n, l.a, l.m, l.c
      FROM unnest(p_line_entries, p_line_nos, p_line_accounts, p_line_amounts, p_line_currencies) AS l(e, n, a, m, c)
     WHERE l.e IN (SELECT entry_id FROM new_entries))
  SELECT coalesce(array_agg(entry_id), '{}') INTO inserted FROM new_entries;

  IF cardinality(inserted) < coalesce(cardinality(p_ids), 0) THEN
    -- A new statement, so a new snapshot: it sees the entries of transactions that committed while
    -- the insert waited on their keys, and this call's own.
    WITH skipped AS (
      SELECT e.i, e.k FROM unnest(p_ids, p_keys) AS e(i, k) WHERE e.i NOT IN (SELECT unnest(inserted))),
    given AS (
      SELECT s.k, array_agg(ROW(l.a, l.m, l.c)::text ORDER BY l.n) AS lines
        FROM skipped s
        JOIN unnest(p_line_entries, p_line_nos, p_line_accounts, p_line_amounts, p_line_currencies) AS l(e, n, a, m, c)
          ON l.e = s.i
       GROUP BY s.i, s.k),
    stored AS (
      SELECT j.idempotency_key AS k,
             array_agg(ROW(jl.account_code, jl.amount_minor, jl.currency)::text ORDER BY jl.line_no) AS lines
        FROM bankworker.journal_entries j
        JOIN bankworker.journal_lines jl ON jl.tenant_id = j.tenant_id AND jl.entry_id = j.entry_id
       WHERE j.idempotency_key IN (SELECT k FROM skipped)
       GROUP BY j.idempotency_key)
    SELECT g.k INTO conflicting
      FROM given g LEFT JOIN stored s ON s.k = g.k
     WHERE s.lines IS DISTINCT FROM g.lines
     ORDER BY g.k LIMIT 1;
    IF conflicting IS NOT NULL THEN
      RAISE EXCEPTION 'entry % was already posted with different lines', conflicting USING ERRCODE = 'BWE01';
    END IF;
  END IF;
  RETURN cardinality(inserted);
END
$$;

REVOKE ALL ON FUNCTION bankworker.post_journal_entries(uuid[], text[], text[], bigint[], text[], text[], uuid[],
                                                       smallint[], text[], bigint[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bankworker.post_journal_entries(uuid[], text[], text[], bigint[], text[], text[], uuid[],
                                                          smallint[], text[], bigint[], text[]) TO bankworker_worker;
