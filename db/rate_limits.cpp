#include "db/rate_limits.hpp"

#include <stdexcept>

#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "db/statement.hpp"

namespace bankworker::db {

namespace {

// $3 is the time in microseconds since the Unix epoch, or NULL for the database clock.
constexpr statement take_sql{"rate_take_tokens",
    "SELECT bankworker.take_rate_tokens($1::text[], $2::integer[],"
    " 'epoch'::timestamptz + $3::bigint * interval '1 microsecond')"};
constexpr const char* prune_sql =
    "SELECT bankworker.prune_rate_buckets('epoch'::timestamptz + $1::bigint * interval '1 microsecond', $2::integer)";

constexpr std::size_t prune_batch_max = 100'000;  // prune_rate_buckets refuses more

bool is_key_character(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' || c == '/' ||
         c == '-';
}

// The same rule as the table's CHECK, so a bad key fails here with its name rather than there.
void check_bucket(const rate_bucket& bucket) {
  if (bucket.key.empty() || bucket.key.size() > rate_bucket_key_bytes_max) {
    throw std::invalid_argument("rate bucket key must be 1..rate_bucket_key_bytes_max bytes");
  }
  const char first = bucket.key.front();
  if (!((first >= 'a' && first <= 'z') || (first >= '0' && first <= '9'))) {
    throw std::invalid_argument("rate bucket key must start with [a-z0-9]: " + bucket.key);
  }
  for (const char c : bucket.key) {
    if (!is_key_character(c)) throw std::invalid_argument("rate bucket key must be [a-z0-9_.:/-]: " + bucket.key);
  }
  if (bucket.per_minute == 0 || bucket.per_minute > rate_per_minute_max) {
    throw std::invalid_argument("rate bucket per_minute must be 1..rate_per_minute_max: " + bucket.key);
  }
}

std::string microseconds_text(std::chrono::system_clock::time_point at) {
  return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count());
}

}  // namespace

std::chrono::milliseconds take_rate_tokens(pqxx::transaction_base& tx, std::span<const rate_bucket> buckets,
                                           std::optional<std::chrono::system_clock::time_point> now) {
  if (buckets.empty() || buckets.size() > rate_buckets_per_take_max) {
    throw std::invalid_argument("take_rate_tokens needs 1..rate_buckets_per_take_max buckets");
  }
  // Array literals built by hand are safe here: every key was checked to hold no quote, backslash,
  // comma or brace, and every element is quoted anyway.
  std::string keys = "{";
  std::string limits = "{";
  for (const rate_bucket& bucket : buckets) {
    check_bucket(bucket);
    if (keys.size() > 1) {
      keys += ',';
      limits += ',';
    }
    keys += '"' + bucket.key + '"';
    limits += std::to_string(bucket.per_minute);
  }
  keys += '}';
  limits += '}';
  const std::string at = now ? microseconds_text(*now) : std::string();
  const auto wait_ms = exec_statement1(tx, take_sql, keys, limits, now ? at.c_str() : nullptr)[0].as<std::int64_t>();
  BW_INVARIANT(wait_ms >= 0);
  BW_INVARIANT(wait_ms <= rate_wait_ms_max);
  return std::chrono::milliseconds(wait_ms);
}

std::chrono::milliseconds take_rate_tokens(pool& connections, std::span<const rate_bucket> buckets,
                                           std::optional<std::chrono::system_clock::time_point> now) {
  pool::lease lease = connections.checkout();
  // One statement in autocommit: its implicit transaction ends with the statement, so the bucket
  // rows it locks are released without waiting for a client round trip, and the function itself
  // turns off the WAL flush wait of that commit (see migration 0023).
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_rate_limit");
  return take_rate_tokens(tx, buckets, now);
}

std::size_t prune_rate_buckets(pool& connections, std::chrono::system_clock::time_point before, std::size_t batch) {
  BW_ASSERT(batch >= 1);
  BW_ASSERT(batch <= prune_batch_max);
  pool::lease lease = connections.checkout();
  pqxx::work tx(lease.connection(), "bankworker_prune_rate_buckets");
  const pqxx::row row = tx.exec_params1(prune_sql, microseconds_text(before), static_cast<int>(batch));
  lease.commit(tx);
  return row[0].as<std::size_t>();
}

}  // namespace bankworker::db
