// The operator's side of the binary, as README's "Operations runbook" describes it: upgrades
// (migrate --dry-run, --status, then migrate, which bankworker-migrate.service runs before every
// start), a database that accepts TCP but never answers (BANKWORKER_DATABASE_CONNECT_TIMEOUT), and
// a bad root key file (exit 78).
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include <pqxx/pqxx>

#include "db/migrate.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using bankworker::test::lines_of;
using bankworker::test::run_bankworker;
using bankworker::test::scratch_database;

namespace {

// A loopback TCP listener that never accepts and never answers: the kernel completes every
// handshake into the backlog, so a client connects and then waits for a reply that never comes,
// like a database host whose server process hangs.
class silent_listener {
 public:
  silent_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
  }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
  ~silent_listener() { ::close(fd_); }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("migrate --dry-run lists what would apply and changes nothing; --status lists every migration",
          "[pg][cli][upgrade]") {
  const scratch_database database(false);
  const std::map<std::string, std::string> env = {{"BANKWORKER_MIGRATE_DATABASE_URL", database.url()}};
  const auto migrations = bankworker::db::embedded_migrations();
  const std::size_t total = migrations.size();

  const auto dry = run_bankworker({"migrate", "--dry-run"}, env);
  REQUIRE(dry.exit_code == 0);
  const auto dry_lines = lines_of(dry.out);
  REQUIRE(dry_lines.size() == total + 1);
  CHECK(dry_lines.front() == "would apply 0001_roles_and_schema.sql");
  CHECK(dry_lines.back() == std::to_string(total) + " of " + std::to_string(total) +
                                " migrations would apply; nothing was changed");
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    CHECK(tx.exec1("SELECT to_regnamespace('bankworker') IS NULL")[0].as<bool>());
  }

  const auto before = run_bankworker({"migrate", "--status"}, env);
  REQUIRE(before.exit_code == 0);
  CHECK(lines_of(before.out).front() == "pending 0001_roles_and_schema.sql");
  CHECK(lines_of(before.out).back() == "schema behind: " + std::to_string(total) + " of " + std::to_string(total) +
                                           " migrations pending");

  REQUIRE(run_bankworker({"migrate"}, env).exit_code == 0);
  const auto after = run_bankworker({"migrate", "--status"}, env);
  REQUIRE(after.exit_code == 0);
  CHECK(lines_of(after.out).front() == "applied 0001_roles_and_schema.sql");
  CHECK(lines_of(after.out).back() == "schema current: " + std::to_string(total) + " migrations applied");
  const auto json = run_bankworker({"--json", "migrate", "--dry-run"}, env);
  REQUIRE(json.exit_code == 0);
  CHECK(contains(json.out, "{\"would_apply\":[],\"applied\":[\"0001_roles_and_schema.sql\""));

  const auto both = run_bankworker({"migrate", "--dry-run", "--status"}, env);
  CHECK(both.exit_code == 2);
}

TEST_CASE("an upgrade: run refuses the older schema, dry-run names the new migration, migrate applies it",
          "[pg][cli][upgrade]") {
  const scratch_database database(false);
  const auto migrations = bankworker::db::embedded_migrations();
  REQUIRE(migrations.size() >= 2);
  const std::string newest(migrations.back().name);
  {
    // The database as the previous release left it: every migration but the newest.
    const auto admin = database.connect_as_admin();
    bankworker::db::apply_migrations(*admin, migrations.first(migrations.size() - 1));
  }
  const bankworker::test::root_key_file root_key;
  const std::map<std::string, std::string> env = {{"BANKWORKER_MIGRATE_DATABASE_URL", database.url()},
                                                  {"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()},
                                                  {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(bankworker::test::free_loopback_port())}};

  const auto refused = run_bankworker({"run"}, env);
  CHECK(refused.exit_code == 1);
  REQUIRE(lines_of(refused.err).size() == 1);
  CHECK(contains(refused.err, "schema is older than this binary"));
  CHECK(contains(refused.err, newest));

  const auto dry = run_bankworker({"migrate", "--dry-run"}, env);
  REQUIRE(dry.exit_code == 0);
  CHECK(dry.out == "would apply " + newest + "\n1 of " + std::to_string(migrations.size()) +
                       " migrations would apply; nothing was changed\n");
  CHECK(contains(run_bankworker({"migrate", "--status"}, env).out, "pending " + newest + "\n"));

  const auto applied = run_bankworker({"migrate"}, env);
  REQUIRE(applied.exit_code == 0);
  CHECK(applied.out.find("applied " + newest + "\n") == 0);
  CHECK(contains(run_bankworker({"migrate", "--status"}, env).out, "schema current"));
}

TEST_CASE("migrate and run give up on a database that accepts TCP but never answers", "[pg][cli][hang]") {
  const silent_listener silent;
  const std::string password = "hunter2-never-printed";
  const std::string uri = "postgresql://bankworker:" + password + "@127.0.0.1:" + std::to_string(silent.port()) + "/bankworker";
  const bankworker::test::root_key_file root_key;
  constexpr int connect_timeout_s = 2;
  // The child's own start-up under the sanitizers, and the one-line report, fit in this margin.
  constexpr auto margin = std::chrono::seconds(6);

  struct attempt {
    std::vector<std::string> args;
    std::string url_variable;
    std::string url;
  };
  const std::vector<attempt> attempts = {
      {{"migrate"}, "BANKWORKER_MIGRATE_DATABASE_URL", uri},
      {{"migrate", "--status"}, "BANKWORKER_MIGRATE_DATABASE_URL", uri},
      {{"run"}, "BANKWORKER_DATABASE_URL", uri},
      {{"run"}, "BANKWORKER_DATABASE_URL",
       "host=127.0.0.1 port=" + std::to_string(silent.port()) + " dbname=bankworker password=" + password},
  };
  for (const attempt& a : attempts) {
    INFO(a.args.front() << " with " << a.url);
    const auto started = std::chrono::steady_clock::now();
    const auto result = bankworker::test::run_process(
        BANKWORKER_BINARY, a.args,
        {{a.url_variable, a.url},
         {"BANKWORKER_DATABASE_CONNECT_TIMEOUT", std::to_string(connect_timeout_s)},
         {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()},
         {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(bankworker::test::free_loopback_port())}},
        30'000);
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(result.exit_code == 1);
    CHECK(took >= std::chrono::seconds(connect_timeout_s) - std::chrono::milliseconds(100));
    CHECK(took < std::chrono::seconds(connect_timeout_s) + margin);
    REQUIRE(lines_of(result.err).size() == 1);
    CHECK(result.err.starts_with("bankworker: cannot connect to the database: "));
    CHECK(contains(result.err, "timeout expired (BANKWORKER_DATABASE_CONNECT_TIMEOUT, 2 s)"));
    CHECK_FALSE(contains(result.err, password));
  }
}

TEST_CASE("BANKWORKER_DATABASE_CONNECT_TIMEOUT out of range is a configuration error", "[cli][config]") {
  for (const std::string value : {"0", "61", "5s", "-1"}) {
    const auto result = run_bankworker({"migrate"}, {{"BANKWORKER_DATABASE_URL", "postgresql://u@127.0.0.1:1/db"},
                                                     {"BANKWORKER_DATABASE_CONNECT_TIMEOUT", value}});
    CHECK(result.exit_code == 78);
    CHECK(result.err == "bankworker: configuration: BANKWORKER_DATABASE_CONNECT_TIMEOUT: expected whole seconds from 1"
                        " to database_connect_timeout_max (60), got '" + value + "'\n");
  }
}

TEST_CASE("a root key file that is not a key, or too open, exits 78 naming the variable", "[pg][cli][config]") {
  const scratch_database database;
  const bankworker::test::root_key_file not_hex("this is not sixty-four hexadecimal characters");
  const bankworker::test::root_key_file too_open(bankworker::test::test_root_key_hex, 0644);
  for (const auto* file : {&not_hex, &too_open}) {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"tenant", "create", "--name", "Acme"}, std::vector<std::string>{"run"}}) {
      INFO(args.front() << " with " << file->path_text());
      const auto result = run_bankworker(args, {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                {"BANKWORKER_ROOT_KEY_FILE", file->path_text()},
                                                {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(bankworker::test::free_loopback_port())}});
      CHECK(result.exit_code == 78);
      REQUIRE(lines_of(result.err).size() == 1);
      INFO(result.err);
      CHECK(result.err.starts_with("bankworker: configuration: BANKWORKER_ROOT_KEY_FILE: root key "));
    }
  }
}
