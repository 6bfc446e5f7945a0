// The bankworker binary as a user meets it, without a database.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "tests/support/process.hpp"

using bankworker::test::lines_of;
using bankworker::test::run_bankworker;

TEST_CASE("the version and the help text answer without configuration", "[cli]") {
  const auto version = run_bankworker({"--version"}, {});
  CHECK(version.exit_code == 0);
  CHECK(version.out == "bankworker " BANKWORKER_VERSION "\n");
  const auto help = run_bankworker({"--help"}, {});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("tenant create --name NAME") != std::string::npos);
}

TEST_CASE("bad usage exits 2 with one line naming the problem", "[cli]") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "no command given"},
      {{"frobnicate"}, "unknown command 'frobnicate'"},
      {{"migrate", "--force"}, "unknown option --force"},
      {{"migrate", "extra"}, "unexpected argument 'extra'"},
      {{"tenant"}, "expected 'tenant create --name NAME'"},
      {{"tenant", "create"}, "needs --name"},
      {{"tenant", "create", "--name"}, "--name needs a value"},
      {{"tenant", "create", "--name", ""}, "tenant name is empty"},
      {{"tenant", "create", "--name", "a\tb"}, "control character"},
      {{"tenant", "create", "--name", std::string(201, 'x')}, "tenant_name_bytes_max"},
      {{"tenant", "create", "--name", "a", "--name", "b"}, "given twice"},
  };
  for (const auto& [args, reason] : cases) {
    INFO(reason);
    const auto result = run_bankworker(args, {{"BANKWORKER_DATABASE_URL", "postgresql://127.0.0.1:1/x"}});
    CHECK(result.exit_code == 2);
    REQUIRE(lines_of(result.err).size() == 1);
    CHECK(result.err.find(reason) != std::string::npos);
    CHECK(result.out.empty());
  }
}

TEST_CASE("bad configuration exits 78 with one line per problem", "[cli][config]") {
  SECTION("missing database URL") {
    const auto result = run_bankworker({"migrate"}, {});
    CHECK(result.exit_code == 78);
    CHECK(lines_of(result.err) ==
          std::vector<std::string>{"bankworker: configuration: BANKWORKER_DATABASE_URL: required "
                                   "(e.g. postgresql://user@127.0.0.1:5432/bankworker)"});
  }
  SECTION("malformed listen address and unreadable key file together") {
    char pattern[] = "/tmp/bankworker-cli-test-XXXXXX";
    const std::filesystem::path directory = ::mkdtemp(pattern);
    const std::filesystem::path key = directory / "root-key";
    std::ofstream(key) << "key material";
    ::chmod(key.c_str(), 0);
    const bool root = ::geteuid() == 0;  // root reads a mode-000 file; use a missing one instead
    const std::string key_path = root ? (directory / "missing-key").string() : key.string();

    const auto result = run_bankworker({"migrate"}, {{"BANKWORKER_DATABASE_URL", "postgresql://127.0.0.1:1/x"},
                                                     {"BANKWORKER_HTTP_LISTEN", "localhost"},
                                                     {"BANKWORKER_ROOT_KEY_FILE", key_path}});
    CHECK(result.exit_code == 78);
    const auto lines = lines_of(result.err);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].find("BANKWORKER_HTTP_LISTEN: expected host:port") != std::string::npos);
    CHECK(lines[1].find("BANKWORKER_ROOT_KEY_FILE: cannot read " + key_path) != std::string::npos);
    CHECK(result.err.find("key material") == std::string::npos);
    std::filesystem::remove_all(directory);
  }
}

TEST_CASE("an unreachable database fails with one line and never prints the password", "[cli]") {
  const auto result =
      run_bankworker({"migrate"}, {{"BANKWORKER_DATABASE_URL",
                                    "postgresql://admin:hunter2-very-secret@127.0.0.1:1/bankworker?connect_timeout=5"}});
  CHECK(result.exit_code == 1);
  REQUIRE(lines_of(result.err).size() == 1);
  CHECK(result.err.find("cannot connect to the database") != std::string::npos);
  CHECK(result.err.find("hunter2") == std::string::npos);
}

TEST_CASE("children get exactly their environment, plus the suite's leak suppressions", "[cli]") {
  const char* suite_value = std::getenv("LSAN_OPTIONS");
  const std::optional<std::string> suite_options =
      suite_value != nullptr ? std::optional<std::string>(suite_value) : std::nullopt;
  ::setenv("LSAN_OPTIONS", "suppressions=/nonexistent/lsan.supp", 1);
  const auto inherited = bankworker::test::run_process("/usr/bin/env", {}, {{"ONLY_THIS", "1"}});
  const auto overridden =
      bankworker::test::run_process("/usr/bin/env", {}, {{"LSAN_OPTIONS", "detect_leaks=0"}});
  ::unsetenv("LSAN_OPTIONS");
  const auto none = bankworker::test::run_process("/usr/bin/env", {}, {});
  if (suite_options) ::setenv("LSAN_OPTIONS", suite_options->c_str(), 1);
  CHECK(lines_of(inherited.out) ==
        std::vector<std::string>{"ONLY_THIS=1", "LSAN_OPTIONS=suppressions=/nonexistent/lsan.supp"});
  CHECK(lines_of(overridden.out) == std::vector<std::string>{"LSAN_OPTIONS=detect_leaks=0"});
  CHECK(lines_of(none.out).empty());
}
