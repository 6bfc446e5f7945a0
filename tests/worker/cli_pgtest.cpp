// The bankworker binary against a real database: migrate and tenant create as a user runs them.
#include <catch2/catch.hpp>

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
