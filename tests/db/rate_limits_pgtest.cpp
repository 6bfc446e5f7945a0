// The shared rate limiter against the private PostgreSQL: exact counts, all-or-nothing over
// several buckets, the wait computed from an injected clock, and many takers on separate
// connections never exceeding the limit together.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "db/rate_limits.hpp"
#include "tests/support/scratch_database.hpp"

using namespace std::chrono_literals;
using bankworker::test::scratch_database;
namespace db = bankworker::db;

namespace {

// A fixed instant on a whole second, so slot arithmetic in the expectations is plain.
const std::chrono::system_clock::time_point t0 = std::chrono::system_clock::time_point(1'790'000'000s);

long count_in_bucket(const scratch_database& database, const std::string& key) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  return tx.exec_params1("SELECT coalesce((SELECT sum(c) FROM bankworker.rate_buckets r, unnest(r.counts) c"
                         " WHERE r.key = $1), 0)",
                         key)[0]
      .as<long>();
}

}  // namespace

TEST_CASE("a 50-per-minute bucket gives exactly 50 tokens, then a wait until the first leaves the window",
          "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(2);
  const std::vector<db::rate_bucket> item{{"plaid:item:test", 50}};
  for (int i = 0; i < 50; ++i) REQUIRE(db::take_rate_tokens(*connections, item, t0 + i * 100ms) == 0ms);
  // 61 s after the first second began: the window is the current second and the 60 before it.
  const auto wait = db::take_rate_tokens(*connections, item, t0 + 5s);
  CHECK(wait == 61s - 5s);
  CHECK(count_in_bucket(database, "plaid:item:test") == 50);
  // Still refused a millisecond before that; allowed from then on.
  CHECK(db::take_rate_tokens(*connections, item, t0 + 61s - 1ms) == 1ms);
  CHECK(db::take_rate_tokens(*connections, item, t0 + 61s) == 0ms);
}

TEST_CASE("tokens are taken from all buckets or none", "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(2);
  const db::rate_bucket client{"plaid:client:/transactions/sync", 5};
  const db::rate_bucket item_a{"plaid:item:a", 3};
  const db::rate_bucket item_b{"plaid:item:b", 3};
  const std::vector<db::rate_bucket> a{client, item_a};
  const std::vector<db::rate_bucket> b{item_b, client};  // order does not matter
  for (int i = 0; i < 3; ++i) REQUIRE(db::take_rate_tokens(*connections, a, t0) == 0ms);
  // Item a is exhausted: nothing is taken from the client bucket either.
  CHECK(db::take_rate_tokens(*connections, a, t0 + 1s) == 60s);
  CHECK(count_in_bucket(database, client.key) == 3);
  // Item b has room, and the client has two tokens left: b gets exactly two.
  CHECK(db::take_rate_tokens(*connections, b, t0 + 2s) == 0ms);
  CHECK(db::take_rate_tokens(*connections, b, t0 + 2s) == 0ms);
  CHECK(db::take_rate_tokens(*connections, b, t0 + 2s) == 59s);
  CHECK(count_in_bucket(database, client.key) == 5);
  CHECK(count_in_bucket(database, item_a.key) == 3);
  CHECK(count_in_bucket(database, item_b.key) == 2);
}

TEST_CASE("the wait is the time until enough old slots leave the window", "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(2);
  const std::vector<db::rate_bucket> bucket{{"test:spread", 4}};
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0) == 0ms);
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0 + 10s) == 0ms);
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0 + 20s) == 0ms);
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0 + 30s) == 0ms);
  // At t0 + 40.25 s the first token (second t0) leaves at t0 + 61 s.
  CHECK(db::take_rate_tokens(*connections, bucket, t0 + 40s + 250ms) == 20s + 750ms);
  CHECK(db::take_rate_tokens(*connections, bucket, t0 + 61s) == 0ms);
  // Now the token of t0 + 10 s is the oldest: it leaves at t0 + 71 s.
  CHECK(db::take_rate_tokens(*connections, bucket, t0 + 62s) == 9s);
  // A clock that steps back never frees a token early, and the wait stays within the window.
  const auto back = db::take_rate_tokens(*connections, bucket, t0 - 3600s);
  CHECK(back > 0ms);
  CHECK(back.count() <= db::rate_wait_ms_max);
}

TEST_CASE("bad buckets are refused before reaching the database", "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  const std::vector<db::rate_bucket> quoted{{"plaid:item:\"x", 5}};
  const std::vector<db::rate_bucket> zero{{"plaid:item:x", 0}};
  const std::vector<db::rate_bucket> none;
  const std::vector<db::rate_bucket> twice{{"plaid:item:x", 5}, {"plaid:item:x", 5}};
  CHECK_THROWS_AS(db::take_rate_tokens(*connections, quoted), std::invalid_argument);
  CHECK_THROWS_AS(db::take_rate_tokens(*connections, zero), std::invalid_argument);
  CHECK_THROWS_AS(db::take_rate_tokens(*connections, none), std::invalid_argument);
  // Duplicates are the database's to refuse: it names them.
  CHECK_THROWS_WITH(db::take_rate_tokens(*connections, twice), Catch::Contains("distinct"));
}

TEST_CASE("concurrent takers on separate connections never exceed the limit together", "[pg][rate_limits]") {
  const scratch_database database;
  constexpr int threads = 6;
  constexpr int attempts_per_thread = 40;
  // Two item buckets under one client bucket; the client limit binds first.
  const db::rate_bucket client{"plaid:client:/transactions/sync", 50};
  const std::vector<db::rate_bucket> items[2] = {{client, {"plaid:item:one", 30}}, {client, {"plaid:item:two", 30}}};
  std::atomic<int> granted{0};
  std::atomic<int> granted_items[2] = {0, 0};
  std::vector<std::thread> takers;
  std::vector<std::unique_ptr<db::pool>> pools;
  for (int t = 0; t < threads; ++t) pools.push_back(database.worker_pool(1));
  for (int t = 0; t < threads; ++t) {
    takers.emplace_back([&, t] {
      for (int i = 0; i < attempts_per_thread; ++i) {
        // Everyone within the same second: only the limits decide.
        if (db::take_rate_tokens(*pools[t], items[t % 2], t0) == 0ms) {
          ++granted;
          ++granted_items[t % 2];
        }
      }
    });
  }
  for (auto& taker : takers) taker.join();
  CHECK(granted.load() == 50);
  CHECK(granted_items[0].load() <= 30);
  CHECK(granted_items[1].load() <= 30);
  CHECK(count_in_bucket(database, client.key) == 50);
  CHECK(count_in_bucket(database, "plaid:item:one") == granted_items[0].load());
  CHECK(count_in_bucket(database, "plaid:item:two") == granted_items[1].load());
}

TEST_CASE("idle buckets are pruned and busy ones kept", "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  const auto now = std::chrono::system_clock::now();
  const std::vector<db::rate_bucket> old_bucket{{"test:old", 5}};
  const std::vector<db::rate_bucket> fresh_bucket{{"test:fresh", 5}};
  REQUIRE(db::take_rate_tokens(*connections, old_bucket, now - 1h) == 0ms);
  REQUIRE(db::take_rate_tokens(*connections, fresh_bucket, now) == 0ms);
  CHECK(db::prune_rate_buckets(*connections, now - 2min, 100) == 1);
  CHECK(count_in_bucket(database, "test:old") == 0);
  CHECK(count_in_bucket(database, "test:fresh") == 1);
}

namespace {

struct stored_window {
  long start_s = 0;
  std::vector<int> counts;
};

stored_window window_of(const scratch_database& database, const std::string& key) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  stored_window window;
  window.start_s = tx.exec_params1("SELECT window_start_s FROM bankworker.rate_buckets WHERE key = $1", key)[0].as<long>();
  for (const pqxx::row& row :
       tx.exec_params("SELECT c FROM bankworker.rate_buckets r, unnest(r.counts) WITH ORDINALITY AS u(c, i)"
                      " WHERE r.key = $1 ORDER BY i",
                      key)) {
    window.counts.push_back(row[0].as<int>());
  }
  return window;
}

std::vector<int> slots_with(std::initializer_list<std::pair<int, int>> slot_counts) {
  std::vector<int> slots(61, 0);
  for (const auto& [slot, count] : slot_counts) slots.at(static_cast<std::size_t>(slot - 1)) = count;
  return slots;
}

}  // namespace

TEST_CASE("the stored window slides with the clock, one slot per second, and a refusal moves it without a token",
          "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  const std::vector<db::rate_bucket> bucket{{"test:slide", 3}};
  const long t0_s = std::chrono::duration_cast<std::chrono::seconds>(t0.time_since_epoch()).count();

  REQUIRE(db::take_rate_tokens(*connections, bucket, t0) == 0ms);
  stored_window window = window_of(database, "test:slide");
  CHECK(window.start_s == t0_s - 60);
  CHECK(window.counts == slots_with({{61, 1}}));

  // Two in the same second later: the window moves by five slots, the first token with it.
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0 + 5s + 10ms) == 0ms);
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0 + 5s + 900ms) == 0ms);
  window = window_of(database, "test:slide");
  CHECK(window.start_s == t0_s - 55);
  CHECK(window.counts == slots_with({{56, 1}, {61, 2}}));

  // Full: refused twelve seconds on, but the window still moves (and nothing is counted).
  CHECK(db::take_rate_tokens(*connections, bucket, t0 + 17s) == 61s - 17s);
  window = window_of(database, "test:slide");
  CHECK(window.start_s == t0_s - 43);
  CHECK(window.counts == slots_with({{44, 1}, {49, 2}}));

  // Idle for longer than the window: every old slot is gone.
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0 + 1000s) == 0ms);
  window = window_of(database, "test:slide");
  CHECK(window.start_s == t0_s + 940);
  CHECK(window.counts == slots_with({{61, 1}}));

  // A clock that steps back counts the token in the newest second seen, not in an old slot.
  const std::vector<db::rate_bucket> back{{"test:back", 5}};
  REQUIRE(db::take_rate_tokens(*connections, back, t0 + 10s) == 0ms);
  REQUIRE(db::take_rate_tokens(*connections, back, t0) == 0ms);
  window = window_of(database, "test:back");
  CHECK(window.start_s == t0_s - 50);
  CHECK(window.counts == slots_with({{61, 2}}));
}

TEST_CASE("the database refuses malformed bucket lists by name and creates no bucket", "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  const auto refusal = [&](const std::string& keys, const std::string& limits) -> std::string {
    auto lease = connections->checkout();
    pqxx::work tx(lease.connection());
    try {
      tx.exec_params("SELECT bankworker.take_rate_tokens($1::text[], $2::integer[], NULL)", keys, limits);
    } catch (const pqxx::sql_error& error) {
      return error.what();
    }
    return "accepted";
  };
  CHECK_THAT(refusal("{}", "{}"), Catch::Contains("1..8 buckets"));
  CHECK_THAT(refusal("{a,b,c,d,e,f,g,h,i}", "{1,1,1,1,1,1,1,1,1}"), Catch::Contains("1..8 buckets"));
  CHECK_THAT(refusal("{a,b}", "{5}"), Catch::Contains("differ in length"));
  CHECK_THAT(refusal("{a,NULL}", "{5,5}"), Catch::Contains("distinct and not null"));
  CHECK_THAT(refusal("{b,a,b}", "{5,5,5}"), Catch::Contains("distinct and not null"));
  CHECK_THAT(refusal("{a,b}", "{5,0}"), Catch::Contains("per_minute 1..1000000"));
  CHECK_THAT(refusal("{a,b}", "{5,NULL}"), Catch::Contains("per_minute 1..1000000"));
  CHECK_THAT(refusal("{a,b}", "{5,1000001}"), Catch::Contains("per_minute 1..1000000"));
  CHECK_THAT(refusal("{{a},{b}}", "{5,5}"), Catch::Contains("one-dimensional"));
  CHECK_THAT(refusal("[0:1]={a,b}", "{5,5}"), Catch::Contains("one-dimensional"));
  CHECK_THAT(refusal("{\"BAD KEY\"}", "{5}"), Catch::Contains("rate_buckets_key_check"));
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.rate_buckets")[0].as<long>() == 0);
  CHECK_THAT(refusal("{a,b}", "{5,5}"), Catch::Equals("accepted"));
}

TEST_CASE("a take turns off its transaction's WAL flush wait and leaves no bucket locked once it returns",
          "[pg][rate_limits]") {
  const scratch_database database;
  const auto connections = database.worker_pool(2);
  const std::vector<db::rate_bucket> bucket{{"test:commit", 5}};
  {
    auto lease = connections->checkout();
    pqxx::work tx(lease.connection());
    CHECK(tx.exec1("SHOW synchronous_commit")[0].as<std::string>() == "on");
    REQUIRE(db::take_rate_tokens(tx, bucket, t0) == 0ms);
    CHECK(tx.exec1("SHOW synchronous_commit")[0].as<std::string>() == "off");
    tx.commit();
  }
  REQUIRE(db::take_rate_tokens(*connections, bucket, t0) == 0ms);
  const auto admin = database.connect_as_admin();
  pqxx::work other(*admin);
  // NOWAIT fails at once if any transaction still holds the row.
  CHECK(other.exec("SELECT 1 FROM bankworker.rate_buckets WHERE key = 'test:commit' FOR UPDATE NOWAIT").size() == 1);
  CHECK(count_in_bucket(database, "test:commit") == 2);
}
