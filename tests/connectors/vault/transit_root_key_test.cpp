// The Vault Transit root key provider against the local Transit simulator: wrap and unwrap with
// associated data, and every failure classified for the caller.
#include <catch2/catch.hpp>

#include "connectors/vault/transit_root_key.hpp"
#include "tests/sim/vault_sim.hpp"

using namespace bankworker;
using connectors::vault::transit_root_key;
using connectors::vault::transit_settings;
using crypto::root_key_error;
using crypto::root_key_failure;

namespace {

constexpr const char* token = "hvs.test-token-0123456789";

transit_root_key provider_for(const test::vault_sim& sim, std::string key_name = "bankworker-root",
                              std::chrono::milliseconds timeout = std::chrono::milliseconds(2'000)) {
  return transit_root_key(
      transit_settings{.address = sim.address(), .key_name = std::move(key_name), .request_timeout = timeout},
      crypto::secret::copy_of(token));
}

template <class Call>
root_key_failure failure_of(Call&& call) {
  try {
    call();
  } catch (const root_key_error& error) {
    CHECK_THAT(error.what(), !Catch::Contains(token));
    return error.failure();
  }
  FAIL("the call succeeded");
  return root_key_failure::unusable_key;
}

}  // namespace

TEST_CASE("a key wrapped through Vault Transit unwraps only with the same associated data", "[vault]") {
  test::vault_sim sim(token);
  transit_root_key root = provider_for(sim);
  CHECK(root.key_id() == "vault:transit/bankworker-root");
  const crypto::secret kek = crypto::secret::random(32);
  const auto tenant = *core::uuid::parse("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6");
  const crypto::bytes aad = crypto::tenant_key_associated_data(tenant, 1, root.key_id());
  const crypto::bytes wrapped = root.wrap(kek, aad);
  CHECK(std::string(wrapped.begin(), wrapped.end()).starts_with("vault:v1:"));
  CHECK(root.unwrap(wrapped, aad).equals(kek));
  CHECK(failure_of([&] { root.unwrap(wrapped, crypto::tenant_key_associated_data(tenant, 2, root.key_id())); }) ==
        root_key_failure::authentication_failed);
  CHECK(failure_of([&] { root.unwrap(crypto::bytes{'x'}, aad); }) == root_key_failure::authentication_failed);
}

TEST_CASE("Vault failures are classified: bad token, server errors, timeouts, refused connections", "[vault]") {
  test::vault_sim sim(token);
  transit_root_key root = provider_for(sim, "bankworker-root", std::chrono::milliseconds(300));
  const crypto::secret kek = crypto::secret::random(32);
  const crypto::bytes aad = {1, 2, 3};
  const crypto::bytes wrapped = root.wrap(kek, aad);

  SECTION("a token Vault refuses needs operator action") {
    transit_root_key wrong(transit_settings{.address = sim.address(), .key_name = "bankworker-root"},
                           crypto::secret::copy_of("hvs.wrong"));
    CHECK(failure_of([&] { wrong.unwrap(wrapped, aad); }) == root_key_failure::unusable_key);
  }
  SECTION("a 503 and a 429 are retried later, then it works again") {
    sim.fail_next(2, 503);
    CHECK(failure_of([&] { root.unwrap(wrapped, aad); }) == root_key_failure::unavailable);
    CHECK(failure_of([&] { root.wrap(kek, aad); }) == root_key_failure::unavailable);
    sim.fail_next(1, 429);
    CHECK(failure_of([&] { root.unwrap(wrapped, aad); }) == root_key_failure::unavailable);
    CHECK(root.unwrap(wrapped, aad).equals(kek));
  }
  SECTION("a stalled Vault hits the request deadline") {
    sim.stall_next(std::chrono::milliseconds(1'000));
    CHECK(failure_of([&] { root.unwrap(wrapped, aad); }) == root_key_failure::unavailable);
  }
  SECTION("a Vault that is down is unavailable") {
    std::string address;
    {
      test::vault_sim gone(token);
      address = gone.address();
    }
    transit_root_key orphan(transit_settings{.address = address, .key_name = "k", .request_timeout = std::chrono::milliseconds(300)},
                            crypto::secret::copy_of(token));
    CHECK(failure_of([&] { orphan.wrap(kek, aad); }) == root_key_failure::unavailable);
  }
}

TEST_CASE("a Vault provider refuses addresses and names it cannot use safely", "[vault]") {
  CHECK_THROWS_AS(transit_root_key(transit_settings{.address = "http://vault.example:8200", .key_name = "k"},
                                   crypto::secret::copy_of(token)),
                  std::invalid_argument);
  CHECK_THROWS_AS(transit_root_key(transit_settings{.address = "https://vault.example", .key_name = "../sys"},
                                   crypto::secret::copy_of(token)),
                  std::invalid_argument);
}
