// The bankworker binary against a real database: migrate, tenant create and the operators' listings
// (tenant list, connections list across tenants, stripe secret list) as a user runs them.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/migrate.hpp"
#include "ledger/ledger.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using bankworker::test::lines_of;
using bankworker::test::run_bankworker;
using bankworker::test::scratch_database;

TEST_CASE("bankworker migrate applies every migration once, then reports the schema current", "[pg][cli]") {
  const scratch_database database(false);
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.url()}};
  const std::size_t total = bankworker::db::embedded_migrations().size();

  const auto first = run_bankworker({"migrate"}, env);
  REQUIRE(first.exit_code == 0);
  CHECK(lines_of(first.out).size() == total + 1);
  CHECK(first.out.find("applied 0001_roles_and_schema.sql\n") == 0);

  const auto again = run_bankworker({"--json", "migrate"}, env);
  REQUIRE(again.exit_code == 0);
  CHECK(again.out == "{\"applied\":[],\"already_applied\":" + std::to_string(total) +
                         ",\"migrations\":" + std::to_string(total) + "}\n");
}

TEST_CASE("bankworker tenant create stores the tenant and prints its id", "[pg][cli]") {
  const scratch_database database;
  const bankworker::test::root_key_file root_key;
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()}};

  const auto plain = run_bankworker({"tenant", "create", "--name", "Acme Ltd"}, env);
  REQUIRE(plain.exit_code == 0);
  const std::string id = plain.out.substr(0, plain.out.size() - 1);
  REQUIRE(bankworker::core::uuid::parse(id));

  const auto json = run_bankworker({"tenant", "create", "--name=Zürich \"AG\"", "--json"}, env);
  REQUIRE(json.exit_code == 0);
  CHECK(json.out.find("\"name\":\"Zürich \\\"AG\\\"\"}") != std::string::npos);

  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  CHECK(tx.exec_params1("SELECT name FROM bankworker.tenants WHERE tenant_id = $1", id)[0].as<std::string>() ==
        "Acme Ltd");
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.tenants")[0].as<int>() == 2);
  // The tenant's chart of accounts is created with it: every standard account, ready for postings.
  const auto& chart = bankworker::ledger::standard_chart();
  CHECK(tx.exec_params1("SELECT count(*) FROM bankworker.ledger_accounts WHERE tenant_id = $1", id)[0].as<std::size_t>() ==
        chart.size());
  CHECK(tx.exec_params1("SELECT kind FROM bankworker.ledger_accounts WHERE tenant_id = $1 AND code = 'stripe.clearing'",
                        id)[0]
            .as<std::string>() == "asset");
}

TEST_CASE("bankworker tenant create on an unmigrated database says to migrate first", "[pg][cli]") {
  const scratch_database database(false);
  const bankworker::test::root_key_file root_key;
  const auto result = run_bankworker({"tenant", "create", "--name", "Acme"},
                                     {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                      {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()}});
  CHECK(result.exit_code == 1);
  REQUIRE(lines_of(result.err).size() == 1);
  CHECK(result.err.find("run 'bankworker migrate' first") != std::string::npos);
}

TEST_CASE("tenant list, connections list across tenants by status, and stripe secret list without material",
          "[pg][cli]") {
  const scratch_database database;
  const bankworker::test::root_key_file root_key;
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()}};
  const auto created_a = run_bankworker({"tenant", "create", "--name", "Acme Ltd"}, env);
  const auto created_b = run_bankworker({"tenant", "create", "--name", "Beta GmbH"}, env);
  REQUIRE(created_a.exit_code == 0);
  REQUIRE(created_b.exit_code == 0);
  const std::string tenant_a = created_a.out.substr(0, created_a.out.size() - 1);
  const std::string tenant_b = created_b.out.substr(0, created_b.out.size() - 1);
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status) VALUES"
                   " ($1, 'c0000000-0000-4000-8000-00000000000a', 'sandbox', 'active'),"
                   " ($1, 'c0000000-0000-4000-8000-00000000000b', 'sandbox', 'needs_reauth'),"
                   " ($2, 'c0000000-0000-4000-8000-00000000000c', 'sandbox', 'needs_reauth')",
                   tenant_a, tenant_b);
    tx.commit();
  }

  const auto tenants = run_bankworker({"tenant", "list"}, env);
  REQUIRE(tenants.exit_code == 0);
  const auto tenant_lines = lines_of(tenants.out);
  REQUIRE(tenant_lines.size() == 2);
  CHECK(tenants.out.find(tenant_a + " active created_at=") != std::string::npos);
  CHECK(tenants.out.find(" connections=2 name=Acme Ltd\n") != std::string::npos);
  CHECK(tenants.out.find(" connections=1 name=Beta GmbH\n") != std::string::npos);
  const auto tenants_json = run_bankworker({"--json", "tenant", "list"}, env);
  REQUIRE(tenants_json.exit_code == 0);
  CHECK(tenants_json.out.find("{\"tenant_id\":\"" + tenant_a + "\",\"name\":\"Acme Ltd\",\"status\":\"active\"") !=
        std::string::npos);

  // Across tenants, each line starts with its tenant; --status keeps one status only.
  const auto reauth = run_bankworker({"connections", "list", "--status", "needs_reauth"}, env);
  REQUIRE(reauth.exit_code == 0);
  const auto reauth_lines = lines_of(reauth.out);
  REQUIRE(reauth_lines.size() == 2);
  CHECK(reauth.out.find(tenant_a + " c0000000-0000-4000-8000-00000000000b needs_reauth") != std::string::npos);
  CHECK(reauth.out.find(tenant_b + " c0000000-0000-4000-8000-00000000000c needs_reauth") != std::string::npos);
  const auto one = run_bankworker({"--json", "connections", "list", "--tenant", tenant_a, "--status", "active"}, env);
  REQUIRE(one.exit_code == 0);
  CHECK(one.out.rfind("[{\"tenant_id\":\"" + tenant_a +
                          "\",\"connection_id\":\"c0000000-0000-4000-8000-00000000000a\",\"status\":\"active\"",
                      0) == 0);
  CHECK(run_bankworker({"connections", "list", "--status", "sleeping"}, env).exit_code == 2);

  const std::string secret_path = root_key.path().parent_path().string() + "/whsec";
  std::ofstream(secret_path) << "whsec_cli_list_test_secret_value\n";
  ::chmod(secret_path.c_str(), 0600);
  const auto added = run_bankworker({"stripe", "secret", "add", "--tenant", tenant_a, "--secret-file", secret_path}, env);
  REQUIRE(added.exit_code == 0);
  const std::string secret_id = added.out.substr(0, added.out.size() - 1);
  // Listing needs no root key: the secrets stay sealed.
  const std::map<std::string, std::string> no_key = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto listed = run_bankworker({"stripe", "secret", "list", "--tenant", tenant_a}, no_key);
  REQUIRE(listed.exit_code == 0);
  REQUIRE(lines_of(listed.out).size() == 1);
  CHECK(listed.out.rfind(secret_id + " created_at=", 0) == 0);
  CHECK(listed.out.find(" rewrapped_at=- key_version=1\n") != std::string::npos);
  CHECK(listed.out.find("whsec") == std::string::npos);
  const auto listed_json = run_bankworker({"--json", "stripe", "secret", "list", "--tenant", tenant_b}, no_key);
  REQUIRE(listed_json.exit_code == 0);
  CHECK(listed_json.out == "{\"tenant_id\":\"" + tenant_b + "\",\"secrets\":[]}\n");
}
