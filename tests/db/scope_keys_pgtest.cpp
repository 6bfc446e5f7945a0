// Tenant scope for the customer's app (migration 0025, README "Tenant scope for the app"): the app's
// login is scoped only by a scope token its server code mints, never by a setting it can write.
// Every test acts as a login that is a member of bankworker_app only, as the attacker would.
#include <map>
#include <string>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"
#include "tests/support/process.hpp"
#include "tests/support/readme.hpp"
#include "tests/support/scope_token.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

namespace test = bankworker::test;
using bankworker::core::uuid;

namespace {

const std::string tenant_a = "aaaaaaaa-0000-4000-8000-00000000000a";
const std::string tenant_b = "bbbbbbbb-0000-4000-8000-00000000000b";
const std::string connection_b = "bbbbbbbb-0000-4000-8000-0000000000cb";

// Two tenants, each with its chart of accounts (rows the app may read), B with a bank connection,
// and one active scope key.
struct app_world {
  test::scratch_database database;
  std::unique_ptr<pqxx::connection> admin = database.connect_as_admin();
  test::scope_key key = test::scope_key::random("k1");

  app_world() {
    {
      pqxx::work tx(*admin);
      for (const std::string& tenant : {tenant_a, tenant_b}) {
        tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 'tenant')", tenant);
      }
      tx.exec_params("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
                     " VALUES ($1, $2, 'sandbox', 'active')",
                     tenant_b, connection_b);
      test::add_scope_key(tx, key);
      tx.commit();
    }
    const auto pool = database.worker_pool(1);
    for (const std::string& tenant : {tenant_a, tenant_b}) {
      bankworker::db::with_tenant(*pool, *uuid::parse(tenant), [](pqxx::work& tx) { bankworker::ledger::ensure_chart(tx); });
    }
  }

  long count(const std::string& sql) {
    pqxx::work tx(*admin);
    return tx.exec1(sql)[0].as<long>();
  }
  std::string token(const std::string& tenant, std::int64_t ttl_s = 300) {
    return test::mint_scope_token(key, tenant, test::unix_now() + ttl_s);
  }
};

// What a refused token left: its SQLSTATE and message.
struct refusal {
  std::string sqlstate;
  std::string message;
};

refusal enter_refused(pqxx::connection& app, const std::string& token) {
  try {
    pqxx::work tx(app);
    tx.exec_params("SELECT bankworker.enter_tenant($1)", token);
    tx.commit();
  } catch (const pqxx::sql_error& error) {
    return {error.sqlstate(), error.what()};
  }
  return {"", "accepted"};
}

long app_count(pqxx::connection& app, const std::string& token, const std::string& sql) {
  pqxx::work tx(app);
  if (!token.empty()) tx.exec_params("SELECT bankworker.enter_tenant($1)", token);
  return tx.exec1(sql)[0].as<long>();
}

}  // namespace

TEST_CASE("the app cannot forge a tenant scope by writing bankworker.tenant_id", "[pg][scope]") {
  app_world world;
  pqxx::connection app(world.database.app_url());
  const long jobs_before = world.count("SELECT count(*) FROM bankworker.jobs");

  // The probe of issue 23, as the app's login with no token at all.
  {
    pqxx::work tx(app);
    tx.exec_params("SELECT set_config('bankworker.tenant_id', $1, false)", tenant_b);
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.ledger_accounts")[0].as<long>() == 0);
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.transactions")[0].as<long>() == 0);
    CHECK_THROWS_WITH(tx.exec_params("SELECT bankworker.request_revoke($1, $2)", tenant_b, connection_b),
                      Catch::Contains("no verified tenant scope"));
  }
  // Nor with a genuine token for A, the setting naming B, and the cross-tenant gate opened.
  {
    pqxx::work tx(app);
    tx.exec_params("SELECT bankworker.enter_tenant($1)", world.token(tenant_a));
    tx.exec_params("SELECT set_config('bankworker.tenant_id', $1, true)", tenant_b);
    tx.exec("SELECT set_config('bankworker.cross_tenant', 'on', true)");
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.ledger_accounts")[0].as<long>() ==
          world.count("SELECT count(*) FROM bankworker.ledger_accounts WHERE tenant_id = '" + tenant_a + "'"));
    CHECK(tx.exec_params1("SELECT count(*) FROM bankworker.ledger_accounts WHERE tenant_id = $1::uuid", tenant_b)[0]
              .as<long>() == 0);
    CHECK_THROWS_WITH(tx.exec_params("SELECT bankworker.request_revoke($1, $2)", tenant_b, connection_b),
                      Catch::Contains("is not the tenant of this transaction's scope token"));
  }
  {
    pqxx::work tx(app);
    tx.exec_params("SELECT bankworker.enter_tenant($1)", world.token(tenant_a));
    CHECK_THROWS_WITH(tx.exec_params("SELECT bankworker.request_revoke($1, $2)", tenant_a, connection_b),
                      Catch::Contains("does not belong"));
  }
  CHECK(world.count("SELECT count(*) FROM bankworker.jobs") == jobs_before);
  CHECK(world.count("SELECT count(*) FROM bankworker.connections WHERE status = 'active'") == 1);

  // B's own token reaches B's rows and B's connection: the boundary is the token, not a wall.
  CHECK(app_count(app, world.token(tenant_b), "SELECT count(*) FROM bankworker.ledger_accounts") > 0);
  {
    pqxx::work tx(app);
    tx.exec_params("SELECT bankworker.enter_tenant($1)", world.token(tenant_b));
    tx.exec_params("SELECT bankworker.request_sync($1, $2)", tenant_b, connection_b);
    tx.commit();
  }
  CHECK(world.count("SELECT count(*) FROM bankworker.jobs WHERE tenant_id = '" + tenant_b + "'") == 1);
}

TEST_CASE("a token for A cannot be edited into one for B, nor stretched, nor used after it expires", "[pg][scope]") {
  app_world world;
  pqxx::connection app(world.database.app_url());
  const std::string for_a = world.token(tenant_a);
  REQUIRE(enter_refused(app, for_a).message == "accepted");

  std::string edited = for_a;
  edited.replace(edited.find(tenant_a), tenant_a.size(), tenant_b);
  const refusal forged = enter_refused(app, edited);
  CHECK(forged.sqlstate == "BWT06");
  CHECK_THAT(forged.message, Catch::Contains("does not verify"));

  std::string later = for_a;  // the expiry pushed one second later, MAC kept
  const std::size_t expiry_at = later.rfind('.') - 1;
  later[expiry_at] = later[expiry_at] == '9' ? '8' : static_cast<char>(later[expiry_at] + 1);
  CHECK(enter_refused(app, later).sqlstate == "BWT06");

  std::string flipped = for_a;  // one bit of the MAC
  flipped.back() = flipped.back() == '0' ? '1' : '0';
  CHECK(enter_refused(app, flipped).sqlstate == "BWT06");

  const refusal expired = enter_refused(app, world.token(tenant_a, -1));
  CHECK(expired.sqlstate == "BWT05");
  CHECK_THAT(expired.message, Catch::Contains("expired"));
  CHECK(enter_refused(app, world.token(tenant_a, 2 * 86400)).sqlstate == "BWT07");
  // A token that expires while the transaction runs stops admitting rows at the next statement.
  {
    pqxx::work tx(app);
    tx.exec_params("SELECT bankworker.enter_tenant($1)", world.token(tenant_a, 2));
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.ledger_accounts")[0].as<long>() > 0);
    tx.exec("SELECT pg_sleep(2.5)");
    CHECK_THROWS_WITH(tx.exec("SELECT count(*) FROM bankworker.ledger_accounts"), Catch::Contains("expired"));
  }
}

TEST_CASE("each bad token gets its own reason, never shows the key, and leaves no scope behind", "[pg][scope]") {
  app_world world;
  pqxx::connection app(world.database.app_url());
  const test::scope_key stranger = test::scope_key::random("nope");
  const std::map<std::string, std::string> cases = {
      {"", "BWT01"},
      {"v1.k1." + tenant_a + ".123", "BWT01"},
      {"v2" + world.token(tenant_a).substr(2), "BWT01"},
      {world.token("AAAAAAAA-0000-4000-8000-00000000000A"), "BWT01"},  // upper case is not canonical
      {world.token(tenant_a) + std::string(300, 'f'), "BWT02"},
      {test::mint_scope_token(stranger, tenant_a, test::unix_now() + 60), "BWT03"},
  };
  for (const auto& [token, sqlstate] : cases) {
    INFO(token);
    const refusal refused = enter_refused(app, token);
    CHECK(refused.sqlstate == sqlstate);
    CHECK(refused.message.find(world.key.hex()) == std::string::npos);
    CHECK(refused.message.find("scope token rejected") != std::string::npos);
    // Nothing behind: the next transaction on the same session has no scope and sees no row.
    CHECK(app_count(app, "", "SELECT count(*) FROM bankworker.ledger_accounts") == 0);
    pqxx::work tx(app);
    CHECK(tx.exec1("SELECT coalesce(current_setting('bankworker.scope_token', true), '')")[0].as<std::string>().empty());
  }
  // A token the app writes into the setting itself is verified all the same.
  {
    pqxx::work tx(app);
    tx.exec_params("SELECT set_config('bankworker.scope_token', $1, true)", "v1.k1." + tenant_b + ".9999999999." +
                                                                                std::string(64, '0'));
    CHECK_THROWS_WITH(tx.exec("SELECT count(*) FROM bankworker.ledger_accounts"), Catch::Contains("does not verify"));
  }
}

TEST_CASE("two scope keys are active at once; a retired key's tokens are refused from the next statement", "[pg][scope]") {
  app_world world;
  pqxx::connection app(world.database.app_url());
  const test::scope_key second = test::scope_key::random("k2");
  {
    pqxx::work tx(*world.admin);
    test::add_scope_key(tx, second);
    tx.commit();
  }
  {
    pqxx::work tx(*world.admin);
    CHECK_THROWS_WITH(test::add_scope_key(tx, test::scope_key::random("k3")), Catch::Contains("two scope keys are active"));
  }
  const std::string old_token = world.token(tenant_a, 600);
  const std::string new_token = test::mint_scope_token(second, tenant_a, test::unix_now() + 600);
  CHECK(app_count(app, old_token, "SELECT count(*) FROM bankworker.ledger_accounts") > 0);
  CHECK(app_count(app, new_token, "SELECT count(*) FROM bankworker.ledger_accounts") > 0);

  pqxx::work held(app);  // a transaction of the app that entered its scope before the retirement
  held.exec_params("SELECT bankworker.enter_tenant($1)", old_token);
  {
    pqxx::work tx(*world.admin);
    CHECK(tx.exec_params1("SELECT bankworker.retire_scope_key($1)", world.key.id)[0].as<bool>());
    tx.commit();
  }
  CHECK_THROWS_WITH(held.exec("SELECT count(*) FROM bankworker.ledger_accounts"), Catch::Contains("retired"));
  held.abort();
  CHECK(enter_refused(app, old_token).sqlstate == "BWT04");
  CHECK(app_count(app, new_token, "SELECT count(*) FROM bankworker.ledger_accounts") > 0);
  // The retired key's material is gone from the table; its id is never reused.
  CHECK(world.count("SELECT count(*) FROM bankworker.scope_keys WHERE inner_pad IS NOT NULL") == 1);
  pqxx::work tx(*world.admin);
  CHECK_THROWS_WITH(test::add_scope_key(tx, test::scope_key::random("k1")), Catch::Contains("never reused"));
}

TEST_CASE("README's Node.js and Python minting snippets produce tokens the database accepts", "[pg][scope]") {
  app_world world;
  pqxx::connection app(world.database.app_url());
  const std::map<std::string, std::string> env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"}};
  const auto node = test::run_process(
      "/usr/bin/env",
      {"node", "-e", test::readme_block("scope-token-node") + "\nprocess.stdout.write(bankworkerScopeToken(process.argv[1], "
                                                             "process.argv[2], process.argv[3]));",
       world.key.id, world.key.hex(), "BBBBBBBB-0000-4000-8000-00000000000B"},
      env);
  REQUIRE(node.exit_code == 0);
  const auto python = test::run_process(
      "/usr/bin/env",
      {"python3", "-c", test::readme_block("scope-token-python") +
                            "\nimport sys\nsys.stdout.write(bankworker_scope_token(sys.argv[1], sys.argv[2], sys.argv[3]))",
       world.key.id, world.key.hex(), tenant_b},
      env);
  REQUIRE(python.exit_code == 0);
  for (const std::string& token : {node.out, python.out}) {
    INFO(token);
    pqxx::work tx(app);
    CHECK(tx.exec_params1("SELECT bankworker.enter_tenant($1)", token)[0].as<std::string>() == tenant_b);
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.ledger_accounts")[0].as<long>() ==
          world.count("SELECT count(*) FROM bankworker.ledger_accounts WHERE tenant_id = '" + tenant_b + "'"));
  }
}

TEST_CASE("bankworker scope-key add, list and retire work as the runtime login, audited, never echoing the key",
          "[pg][scope][cli]") {
  test::scratch_database database;
  const test::root_key_file root_key;
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()}};
  const auto tenant = test::run_bankworker({"tenant", "create", "--name", "Acme"}, env);
  REQUIRE(tenant.exit_code == 0);
  const test::scope_key key = test::scope_key::random("2026-12");
  const test::root_key_file key_file(key.hex());

  const auto added = test::run_bankworker({"scope-key", "add", "--id", key.id, "--key-file", key_file.path_text()}, env);
  REQUIRE(added.exit_code == 0);
  CHECK_THAT(added.out, Catch::Contains("scope key 2026-12 added (fingerprint "));
  CHECK(added.out.find(key.hex()) == std::string::npos);
  CHECK(added.err.find(key.hex()) == std::string::npos);
  const auto listed = test::run_bankworker({"--json", "scope-key", "list"}, env);
  REQUIRE(listed.exit_code == 0);
  CHECK_THAT(listed.out, Catch::Contains("\"key_id\":\"2026-12\",\"state\":\"active\""));
  CHECK(listed.out.find(key.hex()) == std::string::npos);

  const test::root_key_file bad_file("not hex");
  const auto refused = test::run_bankworker({"scope-key", "add", "--id", "x", "--key-file", bad_file.path_text()}, env);
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.err, Catch::Contains("64 hex digits"));

  CHECK(test::run_bankworker({"scope-key", "retire", "--id", key.id}, env).exit_code == 0);
  CHECK(test::run_bankworker({"scope-key", "retire", "--id", key.id}, env).exit_code == 1);
  pqxx::connection admin(database.url());
  pqxx::work tx(admin);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.audit_log WHERE action IN ('scope_key.added', 'scope_key.retired')")[0]
            .as<long>() == 2);
  CHECK(test::run_bankworker({"audit", "verify"}, env).exit_code == 0);
}
