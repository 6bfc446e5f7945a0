-- The inbox keeps each Stripe event's body exactly as it was received, as text.
--
-- Bodies were jsonb. jsonb is not the event that arrived: it reorders keys, drops duplicate keys
-- and rewrites whitespace and escapes, so the stored row could not be shown to be the payload the
-- signature covered. And it cannot hold every valid JSON text: PostgreSQL refuses the escape
-- \u0000 in a jsonb string ("unsupported Unicode escape sequence"), so a genuine, signed event
-- with that escape anywhere in it (a customer's metadata, say) was answered 400 on every delivery
-- and never stored: a money record lost. Text holds any JSON the worker accepted (it parses every
-- event, and its UTF-8, before storing it; PostgreSQL checks the encoding again).
--
-- It is also cheaper: jsonb_in parsed every 2 KB body on insert (about 5 % of the database's time
-- under webhook_load, perf) and jsonb_out printed it again for every posting. Nothing reads the
-- bodies as jsonb; posting parses them in the worker. Existing rows keep the text jsonb prints for
-- them (the original bytes are gone). A change of type resets a column's compression, so 0015's
-- lz4 is set again in the same statement (the rewrite then compresses with it).
SET LOCAL ROLE bankworker_owner;

ALTER TABLE bankworker.stripe_events
  ALTER COLUMN body TYPE text USING body::text, ALTER COLUMN body SET COMPRESSION lz4;
ALTER TABLE bankworker.stripe_unrouted_events
  ALTER COLUMN body TYPE text USING body::text, ALTER COLUMN body SET COMPRESSION lz4;
