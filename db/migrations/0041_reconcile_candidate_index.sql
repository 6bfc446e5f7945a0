-- Candidate deposits found by amount inside the date window (issue #19, reconcile_bench).
--
-- The matcher (ledger/reconcile.cpp, reconcile_candidates) looks, for each payout, for bank rows
-- of the mapped account booked in the payout's window and of an amount within its tolerance. On
-- (tenant_id, account_id, date) the window was an index condition but the amount was not: every
-- row of the window was fetched from the heap to be filtered, about 276 per payout at 10,000 rows
-- a year per account (21,500 buffers per batch of 100 payouts). With amount_minor as a fourth
-- column the index checks the amount itself and the heap is visited for the one or two rows that
-- qualify. The new index serves every query the old one did (same leading columns), so it
-- replaces it: a bank row still maintains one index of this shape, a few bytes wider.
--
-- Building it holds a SHARE lock on transactions (writes wait; reads go on) for the time the
-- build takes: seconds for a million rows.
SET LOCAL ROLE bankworker_owner;

CREATE INDEX transactions_account_date_amount ON bankworker.transactions (tenant_id, account_id, date, amount_minor);
DROP INDEX bankworker.transactions_account_date;

-- The candidates' "held by another payout" probe (reconcile_payouts o with o.transaction_id =
-- t.transaction_id) could be served by two partial indexes of the same predicate, transaction_id
-- IS NOT NULL: the unique (tenant_id, transaction_id), one entry per probe, and
-- reconcile_payouts_matched (tenant_id, expected_on), every matched payout of the tenant per
-- probe. When the statistics were taken before the tenant's payouts were matched (its first run
-- after a backlog: both indexes looked empty), the planner picked the second, and a batch of
-- 1,000 payouts read 37,000 buffers through it (4,000 payouts of one tenant: 0.44 s per batch,
-- growing with the tenant's matched payouts). Keyed on status instead, which the table's CHECK
-- makes equivalent, reconcile_payouts_matched no longer answers that probe; the removed-rows
-- query that it serves names the status.
DROP INDEX bankworker.reconcile_payouts_matched;
CREATE INDEX reconcile_payouts_matched ON bankworker.reconcile_payouts (tenant_id, expected_on)
  WHERE status IN ('matched', 'short', 'conflict');
