// `bankworker operator add|remove|list` as an operator runs them: the real binary, the runtime
// login, a scratch database.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <pqxx/pqxx>

#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"

using namespace bankworker;
using test::run_bankworker;

TEST_CASE("operator add prints a one-time password, stores only its argon2id hash, and list and remove work",
          "[pg][cli][console]") {
  const test::scratch_database database;
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto added = run_bankworker({"operator", "add", "alice"}, env);
  REQUIRE(added.exit_code == 0);
  const std::string marker = "password (shown once): ";
  const std::size_t at = added.out.find(marker);
  REQUIRE(at != std::string::npos);
  const std::string password = added.out.substr(at + marker.size(), 32);
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    const std::string hash = tx.exec1("SELECT password_hash FROM bankworker.operators WHERE name = 'alice'")[0].as<std::string>();
    CHECK(hash.rfind("$argon2id$", 0) == 0);
    CHECK(hash.find(password) == std::string::npos);
  }
  CHECK(run_bankworker({"operator", "add", "alice"}, env).exit_code == 1);  // taken
  CHECK(run_bankworker({"operator", "add", "Not Valid"}, env).exit_code == 2);

  const auto file = std::filesystem::temp_directory_path() / ("bw-operator-" + database.name());
  std::ofstream(file) << "short\n";
  CHECK(run_bankworker({"operator", "add", "bob", "--password-file", file.string()}, env).exit_code == 2);
  std::ofstream(file) << "a password long enough\n";
  const auto bob = run_bankworker({"operator", "add", "bob", "--password-file", file.string()}, env);
  std::filesystem::remove(file);
  CHECK(bob.exit_code == 0);
  CHECK(bob.out.find("shown once") == std::string::npos);

  const auto listed = run_bankworker({"--json", "operator", "list"}, env);
  REQUIRE(listed.exit_code == 0);
  CHECK(listed.out.find("\"name\":\"alice\"") != std::string::npos);
  CHECK(listed.out.find("\"name\":\"bob\"") != std::string::npos);
  CHECK(listed.out.find("argon2") == std::string::npos);

  CHECK(run_bankworker({"operator", "remove", "alice"}, env).exit_code == 0);
  CHECK(run_bankworker({"operator", "remove", "alice"}, env).exit_code == 1);
  CHECK(run_bankworker({"operator", "list"}, env).out.find("alice") == std::string::npos);
}
