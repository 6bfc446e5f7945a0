// The Stripe webhook secret cache (connectors/stripe/webhook_secret_cache.cpp): bounded, least recently used
// out first, a bounded negative cache, and no stale refill after a forget().
#include <catch2/catch.hpp>

#include <random>

#include "connectors/stripe/webhook_secret_cache.hpp"

using namespace bankworker;
using stripe::webhook_secret_cache;
using state = webhook_secret_cache::state;

namespace {

core::uuid tenant_number(std::uint32_t n) {
  std::array<std::uint8_t, 16> bytes{};
  for (int i = 0; i < 4; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  return core::uuid::from_random_bytes(bytes);
}

stripe::webhook_secrets one_secret() {
  std::vector<crypto::secret> secrets;
  secrets.push_back(crypto::secret::copy_of("whsec_cache_test"));
  return std::make_shared<const std::vector<crypto::secret>>(std::move(secrets));
}

const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);

}  // namespace

TEST_CASE("the secret cache keeps at most tenants_max tenants and evicts the least recently used", "[webhook][cache]") {
  webhook_secret_cache cache({.tenants_max = 3, .unknown_tenants_max = 2});
  for (std::uint32_t i = 0; i < 3; ++i) cache.store(tenant_number(i), one_secret(), cache.find(tenant_number(i), t0).generation, t0);
  CHECK(cache.find(tenant_number(0), t0).found == state::found);  // 0 is now the most recent
  cache.store(tenant_number(3), one_secret(), cache.find(tenant_number(3), t0).generation, t0);
  CHECK(cache.tenants() == 3);
  CHECK(cache.find(tenant_number(1), t0).found == state::miss);  // the least recently used went
  CHECK(cache.find(tenant_number(0), t0).found == state::found);
  CHECK(cache.find(tenant_number(3), t0).found == state::found);
}

TEST_CASE("ten thousand random unknown tenants leave at most unknown_tenants_max entries", "[webhook][cache]") {
  webhook_secret_cache cache({.tenants_max = 4, .unknown_tenants_max = 100});
  std::mt19937 random(23);
  for (int i = 0; i < 10'000; ++i) {
    const core::uuid tenant = tenant_number(static_cast<std::uint32_t>(random()));
    const auto lookup = cache.find(tenant, t0);
    REQUIRE(lookup.found == state::miss);
    cache.store(tenant, nullptr, lookup.generation, t0);
    CHECK(cache.find(tenant, t0).found == state::unknown);
  }
  CHECK(cache.unknown_tenants() == 100);
  CHECK(cache.tenants() == 0);
}

TEST_CASE("entries expire: secrets after ttl, unknown tenants after unknown_ttl", "[webhook][cache]") {
  webhook_secret_cache cache({.ttl = std::chrono::seconds(300), .unknown_ttl = std::chrono::seconds(60)});
  cache.store(tenant_number(1), one_secret(), 0, t0);
  cache.store(tenant_number(2), nullptr, 0, t0);
  CHECK(cache.find(tenant_number(2), t0 + std::chrono::seconds(59)).found == state::unknown);
  CHECK(cache.find(tenant_number(2), t0 + std::chrono::seconds(60)).found == state::miss);
  CHECK(cache.find(tenant_number(1), t0 + std::chrono::seconds(299)).found == state::found);
  CHECK(cache.find(tenant_number(1), t0 + std::chrono::seconds(300)).found == state::miss);
}

TEST_CASE("a load begun before forget() does not put the forgotten secrets back", "[webhook][cache]") {
  webhook_secret_cache cache({});
  cache.store(tenant_number(1), one_secret(), 0, t0);
  const auto racing = cache.find(tenant_number(2), t0);  // a lookup starts, reads the database…
  cache.forget(tenant_number(1));                       // …a removal is notified meanwhile…
  cache.store(tenant_number(2), one_secret(), racing.generation, t0);  // …and its result is not kept
  CHECK(cache.find(tenant_number(1), t0).found == state::miss);
  CHECK(cache.find(tenant_number(2), t0).found == state::miss);
  const auto fresh = cache.find(tenant_number(2), t0);
  cache.store(tenant_number(2), one_secret(), fresh.generation, t0);
  CHECK(cache.find(tenant_number(2), t0).found == state::found);
  cache.forget_all();
  CHECK(cache.find(tenant_number(2), t0).found == state::miss);
}

TEST_CASE("a tenant that gains secrets leaves the negative cache, and one that loses them enters it", "[webhook][cache]") {
  webhook_secret_cache cache({});
  cache.store(tenant_number(1), nullptr, 0, t0);
  cache.store(tenant_number(1), one_secret(), 0, t0);
  CHECK(cache.unknown_tenants() == 0);
  CHECK(cache.find(tenant_number(1), t0).found == state::found);
  cache.store(tenant_number(1), std::make_shared<const std::vector<crypto::secret>>(), 0, t0);
  CHECK(cache.tenants() == 0);
  CHECK(cache.find(tenant_number(1), t0).found == state::unknown);
}
