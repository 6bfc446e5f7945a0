// The two logins (issue 23, part 2; README "Roles and logins"): the recipe a DBA runs, exactly as
// README.md writes it; `migrate` as the owner's login and everything else as the runtime login;
// every command but `migrate` refusing a login with owner power; and, from a session of the
// runtime login, the escalation to owner power failing at its first step.
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <pqxx/pqxx>

#include "tests/support/logins.hpp"
#include "tests/support/process.hpp"
#include "tests/support/readme.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

namespace test = bankworker::test;

namespace {

// The recipe's logins are cluster-wide: drop what an earlier run may have left (a role that still
// owns something elsewhere stays, and the recipe then fails loudly, which is what a DBA would see).
void drop_recipe_logins(pqxx::connection& admin) {
  pqxx::nontransaction tx(admin);
  for (const char* login : {"bankworker_migrate", "bankworker_runtime", "bankworker_app_login"}) {
    try {
      tx.exec(std::string("DROP ROLE IF EXISTS ") + login);
    } catch (const pqxx::sql_error&) {
    }
  }
}

// Drops the recipe's logins when the test ends, after the scratch database (declare it first).
struct recipe_logins_dropped_at_end {
  ~recipe_logins_dropped_at_end() {
    try {
      pqxx::connection admin(test::admin_url());
      drop_recipe_logins(admin);
    } catch (const std::exception&) {
    }
  }
};

std::map<std::string, std::string> env_with(const test::root_key_file& key, const std::string& url) {
  return {{"BANKWORKER_DATABASE_URL", url}, {"BANKWORKER_ROOT_KEY_FILE", key.path_text()}};
}

}  // namespace

TEST_CASE("README's role recipe, run as written, gives a migration login and a runtime login that work", "[pg][roles]") {
  const recipe_logins_dropped_at_end cleanup;
  const test::scratch_database database(false);
  const test::root_key_file key;
  pqxx::connection admin(database.url());
  drop_recipe_logins(admin);
  {
    pqxx::nontransaction tx(admin);
    tx.exec(test::readme_block("roles-recipe"));
  }
  const std::string migrate_url = test::url_as(database.url(), "bankworker_migrate", "change-me-migrate");
  const std::string runtime_url = test::url_as(database.url(), "bankworker_runtime", "change-me-runtime");

  auto env = env_with(key, runtime_url);
  env["BANKWORKER_MIGRATE_DATABASE_URL"] = migrate_url;
  const auto migrated = test::run_bankworker({"migrate"}, env);
  INFO(migrated.err);
  REQUIRE(migrated.exit_code == 0);
  const auto tenant = test::run_bankworker({"tenant", "create", "--name", "Recipe Ltd"}, env);
  INFO(tenant.err);
  CHECK(tenant.exit_code == 0);
  CHECK(test::run_bankworker({"jobs", "list"}, env).exit_code == 0);
  CHECK(test::run_bankworker({"audit", "verify"}, env).exit_code == 0);

  // The migration login is refused for anything but migrate.
  const auto as_owner = test::run_bankworker({"jobs", "list"}, env_with(key, migrate_url));
  CHECK(as_owner.exit_code == 78);
  CHECK(test::lines_of(as_owner.err).size() == 1);
  CHECK_THAT(as_owner.err, Catch::Contains("member of bankworker_owner"));

  // From a session of the runtime login, the escalation fails at its first step, and so does each
  // later step tried directly.
  {
    pqxx::connection runtime(runtime_url);
    for (const char* step :
         {"SET ROLE bankworker_owner", "ALTER TABLE bankworker.journal_entries DISABLE TRIGGER USER",
          "ALTER TABLE bankworker.sealed_secrets NO FORCE ROW LEVEL SECURITY",
          "GRANT pg_execute_server_program TO bankworker_runtime", "CREATE ROLE escalated LOGIN SUPERUSER",
          "COPY (SELECT 1) TO PROGRAM 'true'"}) {
      INFO(step);
      pqxx::work tx(runtime);
      CHECK_THROWS_AS(tx.exec(step), pqxx::sql_error);
    }
  }
  {
    pqxx::work tx(admin);
    CHECK(tx.exec1("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bankworker.journal_entries'::regclass"
                   " AND tgenabled = 'D'")[0]
              .as<long>() == 0);
    CHECK(tx.exec1("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'bankworker.sealed_secrets'::regclass")[0]
              .as<bool>());
  }
}

TEST_CASE("run and every other command refuse a login that holds owner power, naming the power", "[pg][roles]") {
  const test::scratch_database database;
  const test::root_key_file key;
  pqxx::connection admin(database.url());
  const std::string prefix = database.name();
  struct privileged {
    std::string login;
    std::string attributes;
    std::string role;
    std::string reason;
  };
  const std::vector<privileged> logins = {
      {prefix + "_createrole", "CREATEROLE", "bankworker_worker", "has CREATEROLE"},
      {prefix + "_bypassrls", "BYPASSRLS", "bankworker_worker", "has BYPASSRLS"},
      {prefix + "_indirect", "", prefix + "_group", "member of bankworker_owner"},
      {prefix + "_app", "", "bankworker_app", "member of bankworker_app"},
  };
  {
    pqxx::nontransaction tx(admin);
    // A group that is itself a member of bankworker_owner: membership through other roles counts.
    tx.exec("CREATE ROLE " + tx.quote_name(prefix + "_group") + " NOLOGIN IN ROLE bankworker_owner, bankworker_worker");
    for (const privileged& p : logins) {
      tx.exec("CREATE ROLE " + tx.quote_name(p.login) + " LOGIN " + p.attributes + " PASSWORD 'pw' IN ROLE " +
              tx.quote_name(p.role));
    }
  }
  std::vector<std::pair<std::string, std::string>> cases = {{database.url(), "is a superuser"}};
  for (const privileged& p : logins) cases.emplace_back(test::url_as(database.url(), p.login, "pw"), p.reason);
  for (const auto& [url, reason] : cases) {
    INFO(reason);
    for (const std::vector<std::string>& command :
         {std::vector<std::string>{"run"}, {"jobs", "list"}, {"tenant", "create", "--name", "X"}}) {
      const auto refused = test::run_bankworker(command, env_with(key, url));
      CHECK(refused.exit_code == 78);
      CHECK(test::lines_of(refused.err).size() == 1);
      CHECK_THAT(refused.err, Catch::Contains(reason));
    }
  }
  // Nothing was done: no tenant was created by any refused command.
  {
    pqxx::work tx(admin);
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.tenants")[0].as<long>() == 0);
  }
  // migrate alone accepts the owner's login (it changes the schema).
  CHECK(test::run_bankworker({"migrate"}, env_with(key, database.url())).exit_code == 0);
  pqxx::nontransaction tx(admin);
  for (const privileged& p : logins) tx.exec("DROP ROLE " + tx.quote_name(p.login));
  tx.exec("DROP ROLE " + tx.quote_name(prefix + "_group"));
}
