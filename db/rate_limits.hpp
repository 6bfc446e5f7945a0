#pragma once
// Rate limits shared by every worker process on one database (issue 5 item 6): Plaid allows
// /transactions/sync 2,500 calls a minute per client and 50 a minute per item, whichever process
// makes them. Each limit is a bucket row in bankworker.rate_buckets; a call takes one token from
// every bucket it counts against, or from none (db/migrations/0007 explains the sliding window).
//
// Bucket keys name the limit, never a secret: "plaid:client:/transactions/sync" for the client,
// "plaid:item:<connection id>" for one item (the connection id is our own random id, not Plaid's
// item_id). Keys are 1..rate_bucket_key_bytes_max bytes of [a-z0-9_.:/-], starting with a letter
// or digit.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <pqxx/transaction_base>

#include "db/pool.hpp"

namespace bankworker::db {

inline constexpr std::size_t rate_bucket_key_bytes_max = 200;
inline constexpr std::size_t rate_buckets_per_take_max = 8;
inline constexpr std::uint32_t rate_per_minute_max = 1'000'000;
// The longest wait take_rate_tokens answers: the 61-second window (the SQL function caps it).
inline constexpr std::int64_t rate_wait_ms_max = 61'000;

struct rate_bucket {
  std::string key;
  std::uint32_t per_minute = 0;  // 1..rate_per_minute_max
};

// Takes one token from every bucket in `buckets` (1..rate_buckets_per_take_max, distinct keys), or
// from none. Returns zero when they were taken; otherwise how long to wait before every bucket
// has room again (the caller waits at least that long, then calls again: another process may take
// the freed token first). `now` replaces the database clock (tests); empty uses clock_timestamp().
//
// The bucket rows stay locked until `tx` ends, so run it in a short transaction of its own and
// commit at once, or in a pqxx::nontransaction (the pool overload below does that). Throws
// std::invalid_argument for a bad key, limit or count (a programming error), and pqxx errors when
// the database fails.
std::chrono::milliseconds take_rate_tokens(pqxx::transaction_base& tx, std::span<const rate_bucket> buckets,
                                           std::optional<std::chrono::system_clock::time_point> now = std::nullopt);

// The same as one autocommit statement on a pooled connection: committed (without waiting for the
// WAL flush) before it returns.
std::chrono::milliseconds take_rate_tokens(pool& connections, std::span<const rate_bucket> buckets,
                                           std::optional<std::chrono::system_clock::time_point> now = std::nullopt);

// Deletes up to `batch` buckets idle since before `before` (at least 61 s idle; a bucket's window
// is empty by then). Returns how many; maintenance repeats while the answer is `batch`.
std::size_t prune_rate_buckets(pool& connections, std::chrono::system_clock::time_point before, std::size_t batch);

}  // namespace bankworker::db
