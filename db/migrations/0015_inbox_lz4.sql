-- Stored Stripe event bodies are compressed with lz4 instead of pglz.
--
-- A ~2 KB event body is past the TOAST threshold, so every inbox insert compresses it; with pglz
-- that was the largest single function in the database's profile under webhook_load (pglz_compress
-- 3.8 % of all PostgreSQL CPU, the TOAST insert around it 4.4 %). lz4 compresses the same JSON
-- several times faster at a similar ratio, and reads back faster too. Only rows written from now
-- on use it; older rows keep pglz and read as before (PostgreSQL records the method per value).
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.stripe_events ALTER COLUMN body SET COMPRESSION lz4;
ALTER TABLE bankworker.stripe_unrouted_events ALTER COLUMN body SET COMPRESSION lz4;
