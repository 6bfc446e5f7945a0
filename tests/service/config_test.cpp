#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "service/config.hpp"

using namespace bankworker::service;

namespace {

env_lookup env_of(std::map<std::string, std::string> values) {
  return [values = std::move(values)](std::string_view name) -> std::optional<std::string> {
    const auto it = values.find(std::string(name));
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

bool mentions(const std::vector<std::string>& problems, std::string_view text) {
  for (const auto& problem : problems) {
    if (problem.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("defaults apply when only the database URL is given", "[worker][config]") {
  const auto result = load_settings(env_of({{"BANKWORKER_DATABASE_URL", "postgresql://u@127.0.0.1:5/db"}}),
                                    {.database = true});
  REQUIRE(result.problems.empty());
  CHECK(result.value.database_url.reveal() == "postgresql://u@127.0.0.1:5/db");
  CHECK(result.value.http_listen.host == "127.0.0.1");
  CHECK(result.value.http_listen.port == 8080);
  CHECK(result.value.concurrency == 8);
  CHECK(result.value.level == log_level::info);
}

TEST_CASE("a missing database URL is a problem only for commands that need it", "[worker][config]") {
  CHECK(mentions(load_settings(env_of({}), {.database = true}).problems, "BANKWORKER_DATABASE_URL: required"));
  CHECK(load_settings(env_of({}), {.database = false}).problems.empty());
}

TEST_CASE("every bad value is reported on its own line naming the variable", "[worker][config]") {
  const env_lookup env = env_of({{"BANKWORKER_DATABASE_URL", "mysql://nope"},
                                 {"BANKWORKER_HTTP_LISTEN", "0.0.0.0"},
                                 {"BANKWORKER_CONCURRENCY", "0"},
                                 {"BANKWORKER_LOG_LEVEL", "loud"},
                                 {"BANKWORKER_PLAID_BASE_URL", "http://plaid.example.com"},
                                 {"BANKWORKER_ROOT_KEY_FILE", "/nonexistent/root-key"}});
  settings_result result = load_settings(env, {.database = true});
  // `bankworker run` then lets each provider read its own variables into the same list.
  env_reader provider_env(env, result.problems);
  CHECK(provider_env.base_url("BANKWORKER_PLAID_BASE_URL").empty());
  CHECK(result.problems.size() == 6);
  CHECK(mentions(result.problems, "BANKWORKER_DATABASE_URL:"));
  CHECK(mentions(result.problems, "BANKWORKER_HTTP_LISTEN:"));
  CHECK(mentions(result.problems, "BANKWORKER_CONCURRENCY:"));
  CHECK(mentions(result.problems, "BANKWORKER_LOG_LEVEL:"));
  CHECK(mentions(result.problems, "BANKWORKER_PLAID_BASE_URL:"));
  CHECK(mentions(result.problems, "BANKWORKER_ROOT_KEY_FILE: cannot read /nonexistent/root-key"));
  for (const auto& problem : result.problems) CHECK(problem.find('\n') == std::string::npos);
}

TEST_CASE("listen addresses accept IPv4, bracketed IPv6 and localhost with a port", "[worker][config]") {
  CHECK(parse_listen_address("127.0.0.1:8080")->port == 8080);
  CHECK(parse_listen_address("[::1]:9000")->host == "::1");
  CHECK(parse_listen_address("localhost:1")->host == "localhost");
  for (const char* bad : {"", ":8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "::1:80",
                          "[::1]80", "example.com:80", "127.0.0.1:80x", "256.0.0.1:80"}) {
    INFO(bad);
    CHECK_FALSE(parse_listen_address(bad));
  }
}

TEST_CASE("plain http is allowed only for loopback provider URLs", "[worker][config]") {
  const auto problems_of = [](std::string_view name, const std::string& url) {
    std::vector<std::string> problems;
    const env_lookup env = env_of({{std::string(name), url}});
    env_reader reader(env, problems);
    reader.base_url(name);
    return problems;
  };
  CHECK(problems_of("BANKWORKER_PLAID_BASE_URL", "http://127.0.0.1:9001").empty());
  CHECK(problems_of("BANKWORKER_STRIPE_API_BASE_URL", "https://api.stripe.com").empty());
  CHECK_FALSE(problems_of("BANKWORKER_STRIPE_API_BASE_URL", "http://10.0.0.1").empty());
}

TEST_CASE("secrets come from the variable, a _FILE, or the systemd credentials directory", "[worker][config]") {
  char pattern[] = "/tmp/bankworker-config-test-XXXXXX";
  const std::filesystem::path directory = ::mkdtemp(pattern);
  std::ofstream(directory / "plaid-secret") << "from-credentials\n";
  std::ofstream(directory / "file-secret") << "from-file\n";

  // What a provider reads its secrets with (Plaid's client secret here).
  const auto secret_from = [](const env_lookup& env, std::vector<std::string>& problems) {
    env_reader reader(env, problems);
    return reader.secret_from("BANKWORKER_PLAID_SECRET", "plaid-secret");
  };
  std::vector<std::string> problems;
  CHECK(secret_from(env_of({{"BANKWORKER_PLAID_SECRET", "inline-value"}}), problems).reveal() == "inline-value");
  CHECK(secret_from(env_of({{"BANKWORKER_PLAID_SECRET_FILE", (directory / "file-secret").string()}}), problems)
            .reveal() == "from-file");
  CHECK(secret_from(env_of({{"CREDENTIALS_DIRECTORY", directory.string()}}), problems).reveal() == "from-credentials");
  CHECK(problems.empty());

  std::vector<std::string> both;
  CHECK(secret_from(env_of({{"BANKWORKER_PLAID_SECRET", "inline-value"},
                            {"BANKWORKER_PLAID_SECRET_FILE", (directory / "file-secret").string()}}),
                    both)
            .empty());
  CHECK(mentions(both, "keep one"));
  for (const auto& problem : both) CHECK(problem.find("inline-value") == std::string::npos);

  std::filesystem::remove_all(directory);
}

TEST_CASE("the root key comes from its variable or the credentials directory and must be readable",
          "[worker][config]") {
  char pattern[] = "/tmp/bankworker-config-test-XXXXXX";
  const std::filesystem::path directory = ::mkdtemp(pattern);
  std::ofstream(directory / "root-key") << "0123456789abcdef0123456789abcdef";

  CHECK(mentions(load_settings(env_of({}), {.root_key = true}).problems, "BANKWORKER_ROOT_KEY_FILE: required"));
  CHECK(load_settings(env_of({{"CREDENTIALS_DIRECTORY", directory.string()}}), {.root_key = true})
            .value.root_key_file == directory / "root-key");
  CHECK(load_settings(env_of({{"BANKWORKER_ROOT_KEY_FILE", (directory / "root-key").string()}}), {.root_key = true})
            .problems.empty());
  // During a root rotation the previous key file is named too; it must be readable.
  CHECK(load_settings(env_of({{"BANKWORKER_ROOT_KEY_FILE", (directory / "root-key").string()},
                              {"BANKWORKER_ROOT_KEY_PREVIOUS_FILE", (directory / "root-key").string()}}),
                      {.root_key = true})
            .value.root_key_previous_file == directory / "root-key");
  CHECK(mentions(load_settings(env_of({{"BANKWORKER_ROOT_KEY_PREVIOUS_FILE", "/nonexistent/old-key"}}), {}).problems,
                 "BANKWORKER_ROOT_KEY_PREVIOUS_FILE: cannot read"));
  std::filesystem::remove_all(directory);
}

TEST_CASE("a Vault Transit root key needs a token and satisfies the root key requirement", "[worker][config]") {
  const auto missing = load_settings(env_of({{"BANKWORKER_VAULT_ADDR", "https://vault.example:8200"}}), {.root_key = true});
  CHECK(mentions(missing.problems, "BANKWORKER_VAULT_TOKEN: required"));
  const auto insecure = load_settings(env_of({{"BANKWORKER_VAULT_ADDR", "http://vault.example:8200"},
                                              {"BANKWORKER_VAULT_TOKEN", "hvs.x"}}),
                                      {});
  CHECK(mentions(insecure.problems, "BANKWORKER_VAULT_ADDR: must be an https:// URL"));
  const auto good = load_settings(env_of({{"BANKWORKER_VAULT_ADDR", "https://vault.example:8200"},
                                          {"BANKWORKER_VAULT_TOKEN", "hvs.x"},
                                          {"BANKWORKER_VAULT_TRANSIT_KEY", "root-2"}}),
                                  {.root_key = true});
  CHECK(good.problems.empty());
  CHECK(good.value.vault_transit_key == "root-2");
  CHECK(good.value.vault_transit_mount == "transit");
  CHECK(good.value.vault_token.reveal() == "hvs.x");
}

TEST_CASE("the log level file holds one level word, wins over BANKWORKER_LOG_LEVEL, and a bad one is named",
          "[worker][config]") {
  char pattern[] = "/tmp/bankworker-config-test-XXXXXX";
  const std::filesystem::path directory = ::mkdtemp(pattern);
  const std::filesystem::path file = directory / "log-level";
  std::ofstream(file) << "  debug\n";
  const auto good = load_settings(env_of({{"BANKWORKER_LOG_LEVEL", "error"},
                                          {"BANKWORKER_LOG_LEVEL_FILE", file.string()}}),
                                  {});
  REQUIRE(good.problems.empty());
  CHECK(good.value.level == log_level::debug);
  CHECK(good.value.log_level_file == file);

  std::ofstream(file) << "loud\n";
  const auto bad = load_settings(env_of({{"BANKWORKER_LOG_LEVEL_FILE", file.string()}}), {});
  CHECK(mentions(bad.problems, "BANKWORKER_LOG_LEVEL_FILE: " + file.string() + " holds 'loud'"));
  CHECK(mentions(load_settings(env_of({{"BANKWORKER_LOG_LEVEL_FILE", "/nonexistent/log-level"}}), {}).problems,
                 "BANKWORKER_LOG_LEVEL_FILE: cannot read /nonexistent/log-level"));

  std::string why;
  std::ofstream(file) << std::string(100, 'x');
  CHECK_FALSE(read_log_level_file(file, why));
  CHECK_THAT(why, Catch::Contains("log_level_file_bytes_max"));
  std::ofstream(file) << "warn";
  CHECK(read_log_level_file(file, why) == log_level::warn);
  std::ofstream(file) << "";
  CHECK_FALSE(read_log_level_file(file, why));
  CHECK_THAT(why, Catch::Contains("holds ''"));
  // The wrong file named by mistake: its content is not repeated in the error.
  std::ofstream(file) << "whsec_0123456789abcdef\n";
  CHECK_FALSE(read_log_level_file(file, why));
  CHECK_THAT(why, Catch::Contains("does not hold a level word"));
  CHECK(why.find("whsec_") == std::string::npos);
  std::filesystem::remove_all(directory);
}

TEST_CASE("numeric settings accept their whole range and refuse what lies outside", "[worker][config]") {
  const auto load = [](std::string name, std::string value) {
    return load_settings(env_of({{std::move(name), std::move(value)}}), {});
  };
  CHECK(load("BANKWORKER_JOB_LEASE", "1").value.job_lease == std::chrono::seconds(1));
  CHECK(load("BANKWORKER_JOB_LEASE", "3").value.job_lease == std::chrono::seconds(3));
  CHECK(load("BANKWORKER_JOB_LEASE", "3600").value.job_lease == std::chrono::seconds(3600));
  CHECK(mentions(load("BANKWORKER_JOB_LEASE", "0").problems, "BANKWORKER_JOB_LEASE: expected whole seconds"));
  CHECK(mentions(load("BANKWORKER_JOB_LEASE", "3601").problems, "BANKWORKER_JOB_LEASE:"));
  CHECK(load("BANKWORKER_DRAIN_TIMEOUT", "600").value.drain_timeout == std::chrono::seconds(600));
  CHECK(mentions(load("BANKWORKER_DRAIN_TIMEOUT", "601").problems, "BANKWORKER_DRAIN_TIMEOUT:"));
  CHECK(load("BANKWORKER_CONCURRENCY", "1").value.concurrency == 1);
  CHECK(mentions(load("BANKWORKER_CONCURRENCY", "99999999999999999999").problems, "BANKWORKER_CONCURRENCY:"));
  CHECK(load("BANKWORKER_DATABASE_CONNECT_TIMEOUT", "60").value.database_connect_timeout == std::chrono::seconds(60));
}
