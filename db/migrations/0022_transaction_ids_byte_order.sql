-- Bank transaction and account ids compare as bytes (COLLATE "C").
--
-- They are Plaid's opaque ids, random to any reader. Under the database's collation every index
-- comparison went through the C library's locale-aware strcoll (C.UTF-8 included: PostgreSQL
-- treats only "C" and "POSIX" as byte order), and a sync's rows land all over the primary key, so
-- each insert compared its id a dozen or more times. In byte order a comparison is a memcmp.
-- Measured with sync_bench (100 items x 1,000 transactions, 4 syncs at once), six interleaved pairs
-- against the same code without this migration: PostgreSQL CPU per transaction 23.3-32.4 us
-- against 27.0-35.3 us, 39.6-56.2k against 34.5-50.8k tx/s, five pairs of six in its favour.
--
-- Equality is unchanged (both collations are deterministic), and comparisons with parameters or
-- with other tables' id columns still work (a column's collation wins over the default). Only the
-- order of ids changes where the database's collation is not byte order, in `export`'s ORDER BY
-- date, transaction_id among transactions of one day; ids carry no meaning in that order.
--
-- The table is not rewritten (text to text is binary coercible), but its primary key and
-- transactions_account_date are rebuilt, under an ACCESS EXCLUSIVE lock held for the rebuild.
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.transactions
  ALTER COLUMN transaction_id TYPE text COLLATE "C",
  ALTER COLUMN account_id TYPE text COLLATE "C";
