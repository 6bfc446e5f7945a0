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
