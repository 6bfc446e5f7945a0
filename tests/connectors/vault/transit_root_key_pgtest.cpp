// The whole key hierarchy with Vault Transit as the root: tenants, seals, opens, audit, and a root
// rotation from the file key to Vault.
#include <catch2/catch.hpp>

#include "connectors/vault/transit_root_key.hpp"
#include "crypto/random.hpp"
#include "db/audit.hpp"
#include "db/keys.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/sim/vault_sim.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

std::unique_ptr<crypto::root_key_provider> vault_root(const test::vault_sim& sim) {
  return std::make_unique<connectors::vault::transit_root_key>(
      connectors::vault::transit_settings{.address = sim.address(), .key_name = "bankworker-root"},
      crypto::secret::copy_of("hvs.pg-test"));
}

}  // namespace

TEST_CASE("with Vault Transit as the root key, tenants seal and open secrets and verify their audit chain",
          "[pg][vault]") {
  test::vault_sim sim("hvs.pg-test");
  test::scratch_database database;
  auto connections = database.worker_pool();
  db::key_store keys(crypto::root_key_ring(vault_root(sim)));
  const core::uuid tenant = ledger::create_tenant(*connections, keys, "Vaulted Ltd");
  const crypto::secret_context context{.purpose = crypto::secret_purpose::stripe_webhook_secret,
                                       .tenant = tenant,
                                       .secret_id = crypto::random_uuid(),
                                       .subject_id = "we_123",
                                       .environment = ""};
  db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
    keys.seal_secret(tx, context, crypto::secret::copy_of("whsec_abcdefghijklmnop"), "test");
  });
  // A fresh process (empty cache) asks Vault to unwrap the tenant key.
  const int before = sim.requests();
  db::key_store fresh(crypto::root_key_ring(vault_root(sim)));
  fresh.prepare(*connections);
  const std::string opened = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
    return std::string(fresh.open_secret(tx, context).reveal().text());
  });
  CHECK(opened == "whsec_abcdefghijklmnop");
  CHECK(sim.requests() > before);
  CHECK_FALSE(db::verify_audit_chain(*connections, fresh, tenant).broken.has_value());
}

TEST_CASE("a root rotation moves tenant keys from the file root key to Vault Transit", "[pg][vault]") {
  test::vault_sim sim("hvs.pg-test");
  test::scratch_database database;
  auto connections = database.worker_pool();
  auto file_keys = test::test_key_store();
  const core::uuid tenant = ledger::create_tenant(*connections, *file_keys, "Moving Ltd");

  const test::root_key_file old_file;
  crypto::root_key_ring ring(vault_root(sim));
  ring.add_previous(crypto::file_root_key::load(old_file.path()));
  db::key_store rotating(std::move(ring));
  rotating.prepare(*connections);
  CHECK(db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
          return rotating.rewrap_tenant_keys_to_primary_root(tx, tenant, "test");
        }) == 1);
  CHECK(rotating.rewrap_signing_keys_to_primary_root(*connections) == 1);

  db::key_store vault_only(crypto::root_key_ring(vault_root(sim)));
  vault_only.prepare(*connections);
  const auto status = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) { return db::key_status(tx, tenant); });
  REQUIRE(status.size() == 1);
  CHECK(status[0].root_key_id == "vault:transit/bankworker-root");
  CHECK_FALSE(db::verify_audit_chain(*connections, vault_only, tenant).broken.has_value());
}
