-- The shared rate limiter keeps its plans.
--
-- take_rate_tokens runs once per provider call (every page of a Plaid sync walk), and was declared
-- with plan_cache_mode = force_custom_plan like the queue's claim functions, so each of its dozen
-- statements was planned again on every call. Its statements look rows up by their unique key
-- and gain nothing from a custom plan (unlike the claim, whose partial indexes depend on the
-- parameters), so the session default (auto: generic plans once they are no worse) applies.
-- Measured with pgbench calling it in a loop (synchronous_commit off, one client, a loaded
-- machine): 2.3-2.4 ms → 1.7 ms per call.
SET LOCAL ROLE bankworker_owner;

ALTER FUNCTION bankworker.take_rate_tokens(text[], integer[], timestamptz) RESET plan_cache_mode;
