// The Plaid provider inside `bankworker run` (connectors/plaid/provider.cpp): SIGHUP reads the
// Plaid secret file again (issue #20 "Reload"), as an operator rotating the secret does it.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/plaid_sim.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;
using test::eventually;

namespace {

std::string file_text(const std::filesystem::path& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("SIGHUP reads a rotated Plaid secret file; requests then use the new secret, and a bad file keeps it",
          "[pg][run][e2e][plaid]") {
  const test::scratch_database database;
  const test::root_key_file key;
  // The simulator accepts only its secret, which is the rotated one: every request made with the
  // secret the worker starts with fails.
  const std::string rotated = test::sim_secret;
  test::plaid_simulator plaid;
  const std::filesystem::path secret_file = key.path().parent_path() / "plaid-secret";
  const std::filesystem::path log_file = key.path().parent_path() / "worker.log";
  const auto write_secret = [&](std::string_view text) { std::ofstream(secret_file) << text; };
  write_secret("secret-before-the-rotation\n");
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                                  {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                                  {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                                  {"BANKWORKER_PLAID_BASE_URL", plaid.url},
                                                  {"BANKWORKER_PLAID_CLIENT_ID", test::sim_client_id},
                                                  {"BANKWORKER_PLAID_SECRET_FILE", secret_file.string()},
                                                  {"BANKWORKER_LOG_LEVEL", "info"}};
  const auto created = test::run_bankworker({"tenant", "create", "--name", "Rotation Ltd"}, env);
  REQUIRE(created.exit_code == 0);
  const std::string tenant = created.out.substr(0, created.out.size() - 1);

  test::child_process worker("/bin/sh", {"-c", "exec \"$0\" run 2>\"$1\"", BANKWORKER_BINARY, log_file.string()},
                             env);
  REQUIRE(eventually([&] { return test::http_get("http://127.0.0.1:" + std::to_string(admin_port) + "/healthz").status == 200; }));
  const auto log = [&] { return file_text(log_file); };

  // A file that holds no secret: the old one stays, and the warning names the variable.
  write_secret("");
  worker.signal(SIGHUP);
  REQUIRE(eventually([&] { return log().find("Plaid secret not reloaded") != std::string::npos; }));
  CHECK_THAT(log(), Catch::Contains("BANKWORKER_PLAID_SECRET_FILE"));

  // The rotation: the new secret in the file, then SIGHUP. A link made afterwards exchanges its
  // public token and syncs with it.
  write_secret(rotated + "\n");
  worker.signal(SIGHUP);
  REQUIRE(eventually([&] { return log().find("Plaid secret read again") != std::string::npos; }));
  const auto linked =
      test::run_bankworker({"--json", "plaid", "link", "--tenant", tenant, "--public-token", plaid.public_token(), "--wait"}, env);
  INFO(linked.out << linked.err << log());
  REQUIRE(linked.exit_code == 0);
  const auto at = linked.out.find("\"connection_id\":\"");
  REQUIRE(at != std::string::npos);
  const std::string connection = linked.out.substr(at + 17, 36);

  // A bad file now keeps the rotated secret: a sync still works.
  write_secret("two words\n");
  worker.signal(SIGHUP);
  const auto warned = [&] {
    const std::string text = log();
    std::size_t found = 0;
    for (std::size_t at_ = text.find("Plaid secret not reloaded"); at_ != std::string::npos;
         at_ = text.find("Plaid secret not reloaded", at_ + 1)) {
      ++found;
    }
    return found;
  };
  REQUIRE(eventually([&] { return warned() == 2; }));
  const auto synced =
      test::run_bankworker({"connections", "sync", "--tenant", tenant, "--connection", connection, "--wait"}, env);
  INFO(synced.out << synced.err);
  CHECK(synced.exit_code == 0);
  CHECK(log().find(rotated) == std::string::npos);  // never logged

  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}
