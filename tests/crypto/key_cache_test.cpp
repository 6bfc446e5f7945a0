// The unwrapped-key cache: bounded in entries and in time, with an injected clock.
#include <catch2/catch.hpp>

#include "crypto/key_cache.hpp"

using namespace bankworker;
using namespace std::chrono_literals;

namespace {

struct fake_clock {
  std::chrono::steady_clock::time_point now{};
  crypto::key_cache::clock_function function() {
    return [this] { return now; };
  }
};

core::uuid tenant(std::uint8_t n) {
  core::uuid id;
  id.bytes[15] = n;
  return id;
}

std::shared_ptr<const crypto::secret> some_key() {
  return std::make_shared<const crypto::secret>(crypto::secret::random(32));
}

}  // namespace

TEST_CASE("a cached key expires after its TTL", "[crypto][key_cache]") {
  fake_clock clock;
  crypto::key_cache cache({.entries_max = 4, .ttl = 60s}, clock.function());
  const auto key = some_key();
  cache.insert(tenant(1), 1, key);
  clock.now += 59s;
  CHECK(cache.find(tenant(1), 1) == key);
  clock.now += 1s;
  CHECK(cache.find(tenant(1), 1) == nullptr);
  CHECK(cache.size() == 0);
}

TEST_CASE("lookups are counted as hits or misses, an expired entry as a miss", "[crypto][key_cache]") {
  fake_clock clock;
  crypto::key_cache cache({.entries_max = 4, .ttl = 60s}, clock.function());
  CHECK(cache.find(tenant(1), 1) == nullptr);
  cache.insert(tenant(1), 1, some_key());
  CHECK(cache.find(tenant(1), 1) != nullptr);
  CHECK(cache.find(tenant(1), 1) != nullptr);
  CHECK(cache.find(tenant(1), 2) == nullptr);
  clock.now += 60s;
  CHECK(cache.find(tenant(1), 1) == nullptr);
  CHECK(cache.hits() == 2);
  CHECK(cache.misses() == 3);
  // Forgetting keys empties the cache but never winds the counters back (they are Prometheus counters).
  cache.clear();
  CHECK(cache.hits() == 2);
  CHECK(cache.misses() == 3);
}

TEST_CASE("a full cache drops the entry closest to expiry", "[crypto][key_cache]") {
  fake_clock clock;
  crypto::key_cache cache({.entries_max = 2, .ttl = 60s}, clock.function());
  cache.insert(tenant(1), 1, some_key());
  clock.now += 1s;
  cache.insert(tenant(2), 1, some_key());
  clock.now += 1s;
  cache.insert(tenant(3), 1, some_key());
  CHECK(cache.size() == 2);
  CHECK(cache.find(tenant(1), 1) == nullptr);
  CHECK(cache.find(tenant(2), 1) != nullptr);
  CHECK(cache.find(tenant(3), 1) != nullptr);
}

TEST_CASE("forgetting a tenant drops every version of its keys and nobody else's", "[crypto][key_cache]") {
  crypto::key_cache cache({.entries_max = 8, .ttl = 60s});
  cache.insert(tenant(1), 1, some_key());
  cache.insert(tenant(1), 2, some_key());
  cache.insert(tenant(2), 1, some_key());
  cache.forget_tenant(tenant(1));
  CHECK(cache.find(tenant(1), 1) == nullptr);
  CHECK(cache.find(tenant(1), 2) == nullptr);
  CHECK(cache.find(tenant(2), 1) != nullptr);
}

TEST_CASE("cache settings outside their limits are refused", "[crypto][key_cache]") {
  CHECK_THROWS_AS(crypto::key_cache({.entries_max = 0, .ttl = 60s}), std::invalid_argument);
  CHECK_THROWS_AS(crypto::key_cache({.entries_max = 8, .ttl = 0s}), std::invalid_argument);
  CHECK_THROWS_AS(crypto::key_cache({.entries_max = 8, .ttl = 100'000s}), std::invalid_argument);
}
