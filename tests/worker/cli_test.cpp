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

TEST_CASE("every command and subcommand answers --help with its own usage and exit 0", "[cli][help]") {
  for (const std::string_view path :
       {"migrate", "run", "tenant", "tenant create", "tenant list", "export", "keys", "keys status", "keys rotate", "keys rewrap",
        "keys destroy", "audit", "audit verify", "audit checkpoint", "audit pubkey", "stripe", "stripe secret",
        "stripe secret add", "stripe secret remove", "stripe secret list", "stripe connect", "stripe key", "stripe key set", "plaid",
        "plaid link", "connections", "connections list", "connections sync", "connections revoke", "scope-key",
        "scope-key add", "scope-key list", "scope-key retire", "jobs", "jobs list", "jobs show", "jobs retry", "jobs cancel"}) {
    INFO(path);
    std::vector<std::string> args;
    for (std::size_t at = 0; at <= path.size();) {
      const std::size_t space = std::min(path.find(' ', at), path.size());
      args.emplace_back(path.substr(at, space - at));
      at = space + 1;
    }
    args.emplace_back("--help");
    // No configuration at all: help never needs it.
    const auto help = run_bankworker(args, {});
    CHECK(help.exit_code == 0);
    CHECK(help.err.empty());
    CHECK(help.out.rfind("usage: bankworker " + std::string(path), 0) == 0);
    CHECK(help.out.find("--database-url URL") != std::string::npos);
    CHECK(help.out.find("visible to other local users") != std::string::npos);
    args.insert(args.begin(), "help");
    args.pop_back();
    CHECK(run_bankworker(args, {}).out == help.out);
  }
  const auto group = run_bankworker({"jobs", "--help"}, {});
  CHECK(group.out.find("  jobs list [--state S]") != std::string::npos);
  CHECK(group.out.find("  jobs retry ID") != std::string::npos);
  CHECK(run_bankworker({"nonsense", "--help"}, {}).exit_code == 2);
}

TEST_CASE("the option --database-url overrides the environment's URL and its _FILE form, and never echoes a password",
          "[cli][config]") {
  const std::map<std::string, std::string> env = {
      {"BANKWORKER_DATABASE_URL_FILE", "/nonexistent/database-url"},
      {"BANKWORKER_MIGRATE_DATABASE_URL", "not a url"}};
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"migrate", "--database-url", "postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=5"},
        std::vector<std::string>{"jobs", "list", "--database-url=postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=5"}}) {
    INFO(args.front());
    const auto result = run_bankworker(args, env);
    // Without the option these fail as bad configuration (78); with it they reach the URL given.
    CHECK(result.exit_code == 1);
    CHECK(result.err.find("cannot connect to the database") != std::string::npos);
    CHECK(result.err.find("hunter2") == std::string::npos);
  }
  CHECK(run_bankworker({"migrate"}, env).exit_code == 78);
  const auto refused = run_bankworker({"man", "--database-url", "postgresql://x@127.0.0.1/x"}, {});
  CHECK(refused.exit_code == 2);
  CHECK(refused.err.find("--database-url does not apply") != std::string::npos);
}

TEST_CASE("the man page and the bash completion come from the help table", "[cli][help]") {
  const auto man = run_bankworker({"man"}, {});
  REQUIRE(man.exit_code == 0);
  CHECK(man.out.rfind(".TH BANKWORKER 1 ", 0) == 0);
  CHECK(man.out.find(".B jobs list [\\-\\-state S]") != std::string::npos);
  CHECK(man.out.find("visible to other local users") != std::string::npos);
  for (const std::string& line : lines_of(man.out)) {
    INFO(line);
    // A text line starting with ' or an unknown request would be eaten by troff.
    if (line.starts_with(".") || line.starts_with("'")) {
      const std::string request = line.substr(1, line.find(' ') == std::string::npos ? std::string::npos : line.find(' ') - 1);
      CHECK((request == "TH" || request == "SH" || request == "B" || request == "I" || request == "TP" ||
             request == "RS" || request == "RE" || request == "nf" || request == "fi"));
    }
  }

  char man_pattern[] = "/tmp/bankworker-man-XXXXXX";
  const std::filesystem::path man_directory = ::mkdtemp(man_pattern);
  std::ofstream(man_directory / "bankworker.1") << man.out;
  // groff (when installed) renders it without a single warning, -ww enabling them all.
  if (std::system("command -v groff >/dev/null 2>&1") == 0) {
    const std::string render = "groff -man -Tutf8 -ww -z " + (man_directory / "bankworker.1").string() + " 2> " +
                               (man_directory / "warnings").string();
    CHECK(std::system(render.c_str()) == 0);
    CHECK(std::filesystem::file_size(man_directory / "warnings") == 0);
  }
  std::filesystem::remove_all(man_directory);

  const auto completion = run_bankworker({"completion", "bash"}, {});
  REQUIRE(completion.exit_code == 0);
  char pattern[] = "/tmp/bankworker-completion-XXXXXX";
  const std::filesystem::path directory = ::mkdtemp(pattern);
  std::ofstream(directory / "bankworker.bash") << completion.out;
  // Real bash, completing as it would at a prompt: COMP_WORDS is what the user typed so far.
  const auto complete = [&](const std::string& typed, int word) {
    const std::string command = "bash -c 'source " + (directory / "bankworker.bash").string() + "; COMP_WORDS=(" +
                                typed + "); COMP_CWORD=" + std::to_string(word) +
                                "; _bankworker; echo \"${COMPREPLY[*]}\"' > " + (directory / "out").string();
    REQUIRE(std::system(command.c_str()) == 0);
    std::ifstream in(directory / "out");
    std::string line;
    std::getline(in, line);
    return line;
  };
  CHECK(complete("bankworker jo", 1) == "jobs");
  CHECK(complete("bankworker jobs ''", 2) == "--json --help --database-url list show retry cancel");
  CHECK(complete("bankworker stripe secret a", 3) == "add");
  CHECK(complete("bankworker jobs list --tenant x --st", 5) == "--state");
  std::filesystem::remove_all(directory);
}
