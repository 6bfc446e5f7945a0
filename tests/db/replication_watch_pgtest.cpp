// A primary whose synchronous standby has vanished, for real: a PostgreSQL of the test's own
// (scripts/pg in a temporary directory, BANKWORKER_PG_DIR, as tests/chaos does) told to wait for a
// standby that never connects. A commit then waits for it until the wait is cancelled, and
// PostgreSQL returns success with only a WARNING although the commit exists on this server alone.
// The pool must call that commit in doubt (db/replication_watch.hpp), never done.
//
// Found here: PostgreSQL 15 does not apply statement_timeout to that wait (the timeout is disabled
// before the commit runs), so the session's 500 ms below do not end it; a cancel request does
// (pg_cancel_backend, or a client's PQcancel), which the test sends as an operator would.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <sstream>
#include <utility>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "crypto/random.hpp"
#include "db/pool.hpp"
#include "db/replication_watch.hpp"
#include "db/tenant_scope.hpp"
#include "tests/support/process.hpp"

using namespace bankworker::db;

namespace {

constexpr int pg_command_timeout_ms = 180'000;

// The test's own cluster, destroyed at the end: changing synchronous_standby_names on the shared
// one would make every other test's commits wait. It starts with an empty table replication_probe.
class own_cluster {
 public:
  own_cluster() {
    std::string pattern = (std::filesystem::temp_directory_path() / "bankworker-syncrep-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    parent_ = pattern;
    ::chmod(parent_.c_str(), 0755);  // as root, scripts/pg hands parent_/pg to its server user
    url_ = run_pg("start");
    while (!url_.empty() && url_.back() == '\n') url_.pop_back();
    pqxx::connection admin(url_);
    pqxx::nontransaction(admin).exec("CREATE TABLE replication_probe (id int NOT NULL)");
  }
  own_cluster(const own_cluster&) = delete;
  own_cluster& operator=(const own_cluster&) = delete;
  ~own_cluster() {
    try {
      run_pg("destroy");
    } catch (const std::exception&) {
      // The directory goes below whatever the server did.
    }
    std::error_code ignored;
    std::filesystem::remove_all(parent_, ignored);
  }
  const std::string& url() const { return url_; }

 private:
  std::string run_pg(const std::string& command) const {
    const auto script = std::filesystem::path(BANKWORKER_README).parent_path() / "scripts" / "pg";
    const char* path = std::getenv("PATH");
    const std::map<std::string, std::string> env{
        {"BANKWORKER_PG_DIR", (parent_ / "pg").string()},
        {"PATH", path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}};
    const auto result = bankworker::test::run_process(script.string(), {command}, env, pg_command_timeout_ms);
    if (result.exit_code != 0) throw std::runtime_error("scripts/pg " + command + " failed: " + result.err);
    return result.out;
  }

  std::filesystem::path parent_;
  std::string url_;
};

// Sets synchronous_standby_names and waits until a new session sees it (a reload is asynchronous).
void require_standby(const own_cluster& cluster, const std::string& names) {
  pqxx::connection admin(cluster.url());
  {
    pqxx::nontransaction tx(admin);
    tx.exec("ALTER SYSTEM SET synchronous_standby_names = " + tx.quote(names));
    tx.exec("SELECT pg_reload_conf()");
  }
  for (int i = 0; i < 100; ++i) {
    pqxx::connection fresh(cluster.url());
    pqxx::nontransaction tx(fresh);
    if (tx.exec1("SHOW synchronous_standby_names")[0].as<std::string>() == names) {
      // The checkpointer publishes the change to committing backends a moment after the reload.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("synchronous_standby_names did not become '" << names << "'");
}

// Cancels the first session found waiting for the synchronous standby (up to 20 s), from a
// connection of its own; true when it did.
bool cancel_standby_wait(const own_cluster& cluster) {
  pqxx::connection admin(cluster.url());
  for (int i = 0; i < 200; ++i) {
    pqxx::nontransaction tx(admin);
    if (tx.exec("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").size() > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The server process of a session.
int backend_pid(pqxx::connection& connection) {
  return pqxx::nontransaction(connection).exec1("SELECT pg_backend_pid()")[0].as<int>();
}

// The server process behind the pool's next free connection.
int pooled_backend_pid(pool& connections) {
  auto lease = connections.checkout();
  return backend_pid(lease.connection());
}

// A pool of `connections` as the cluster's superuser (this cluster has no bankworker roles).
pool_settings superuser_pool(std::size_t connections) {
  pool_settings settings;
  settings.connections = connections;
  settings.role.clear();
  return settings;
}

long probe_rows(const own_cluster& cluster) {
  pqxx::connection admin(cluster.url());
  pqxx::nontransaction tx(admin);
  return tx.exec1("SELECT count(*) FROM replication_probe")[0].as<long>();
}

}  // namespace

TEST_CASE("a commit acknowledged without the synchronous standby is in doubt, not done", "[pg][failover]") {
  const own_cluster cluster;
  pool_settings settings = superuser_pool(1);
  settings.statement_timeout = std::chrono::milliseconds(500);
  pool connections(bankworker::crypto::secret::copy_of(cluster.url()), settings);
  const auto tenant = bankworker::crypto::random_uuid();
  const auto insert = [](pqxx::work& tx) { tx.exec("INSERT INTO replication_probe VALUES (1)"); };

  require_standby(cluster, "vanished_standby");
  bool cancelled = false;
  std::thread canceller([&] { cancelled = cancel_standby_wait(cluster); });
  SECTION("a tenant-scoped transaction's commit") {
    CHECK_THROWS_AS(with_tenant(connections, tenant, insert), replication_in_doubt);
  }
  SECTION("a statement in autocommit, checked by the lease") {
    auto lease = connections.checkout();
    pqxx::nontransaction tx(lease.connection());
    tx.exec("INSERT INTO replication_probe VALUES (1)");
    CHECK_THROWS_AS(lease.commit(tx), replication_in_doubt);
  }
  canceller.join();
  REQUIRE(cancelled);
  // It did land on this server: what makes it in doubt rather than failed.
  CHECK(probe_rows(cluster) == 1);

  // With no standby to wait for, a commit is done again and the pool carries on.
  require_standby(cluster, "");
  with_tenant(connections, tenant, insert);
  CHECK(probe_rows(cluster) == 2);
}

// No operator cancels here: the pool's commit deadline does (db/commit_watch.hpp). Without it the
// commit waits as long as the standby stays away (an hour here would be no different), which is
// how `make failover` saw three workers hang for two minutes behind an old primary whose shutdown
// had stalled, while the new primary took writes.
TEST_CASE("a commit left waiting for a vanished standby is cancelled after commit_wait_max, in doubt, and the "
          "pool's connections to that server are replaced",
          "[pg][failover]") {
  const own_cluster cluster;
  pool_settings settings = superuser_pool(2);
  settings.commit_wait_max = std::chrono::milliseconds(1'000);
  pool connections(bankworker::crypto::secret::copy_of(cluster.url()), settings);
  const auto tenant = bankworker::crypto::random_uuid();
  // Both connections open, so the one left idle is one the pool had open to that server.
  int idle_before = 0;
  {
    auto first = connections.checkout();
    auto second = connections.checkout();
    idle_before = backend_pid(second.connection());
  }

  require_standby(cluster, "vanished_standby");
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(with_tenant(connections, tenant,
                              [](pqxx::work& tx) { tx.exec("INSERT INTO replication_probe VALUES (1)"); }),
                  replication_in_doubt);
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= std::chrono::milliseconds(1'000));
  CHECK(waited < std::chrono::seconds(10));
  CHECK(probe_rows(cluster) == 1);  // committed locally: in doubt, not failed

  // Neither connection the pool had before is handed out again.
  require_standby(cluster, "");
  const int after_first = pooled_backend_pid(connections);
  const int after_second = [&] {
    auto a = connections.checkout();
    auto b = connections.checkout();
    return backend_pid(b.connection());
  }();
  CHECK(after_first != idle_before);
  CHECK(after_second != idle_before);
  with_tenant(connections, tenant, [](pqxx::work& tx) { tx.exec("INSERT INTO replication_probe VALUES (2)"); });
  CHECK(probe_rows(cluster) == 2);
}

// The queue's operations are single statements in autocommit: each waits for the standby as it
// ends, inside the statement, where neither statement_timeout nor lease::commit's deadline
// reaches. Held around them, watch_autocommit's ticket does (a worker's claims, heartbeats and
// completions once hung on a stalled old primary in `make failover` until its pool ran dry).
TEST_CASE("a statement in autocommit left waiting for a vanished standby is cancelled under watch_autocommit and "
          "is in doubt",
          "[pg][failover]") {
  const own_cluster cluster;
  pool_settings settings = superuser_pool(1);
  settings.commit_wait_max = std::chrono::milliseconds(1'000);
  pool connections(bankworker::crypto::secret::copy_of(cluster.url()), settings);

  require_standby(cluster, "vanished_standby");
  const auto started = std::chrono::steady_clock::now();
  {
    auto lease = connections.checkout();
    const commit_watch::ticket deadline = lease.watch_autocommit();
    pqxx::nontransaction tx(lease.connection());
    tx.exec("INSERT INTO replication_probe VALUES (1)");
    CHECK_THROWS_AS(lease.commit(tx), replication_in_doubt);
  }
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= std::chrono::milliseconds(1'000));
  CHECK(waited < std::chrono::seconds(10));
  CHECK(probe_rows(cluster) == 1);
  require_standby(cluster, "");
}

namespace {

// The parent of a backend: its postmaster.
pid_t parent_of(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  char state = 0;
  pid_t parent = 0;
  rest >> state >> parent;
  return parent;
}

// Stops a process (SIGSTOP) and resumes it when it goes, whatever the test did meanwhile.
class stopped_process {
 public:
  explicit stopped_process(pid_t pid) : pid_(pid) { ::kill(pid_, SIGSTOP); }
  stopped_process(const stopped_process&) = delete;
  stopped_process& operator=(const stopped_process&) = delete;
  ~stopped_process() { resume(); }
  void resume() {
    if (pid_ != 0) ::kill(std::exchange(pid_, 0), SIGCONT);
  }

 private:
  pid_t pid_;
};

}  // namespace

// PQcancel has no timeout: it connects to the server and waits for it to close the connection. A
// postmaster that is hung (here stopped with SIGSTOP; in `make failover`, an old primary whose
// shutdown stalled) accepts the TCP connection in the kernel and never answers, so a cancel sent
// to it waits until the server dies. The commit it was sent for may end another way (its backend
// terminated, as a fast shutdown does); the caller must then be free at once, not wait for the
// cancel, and the connection must not be reused while the cancel may still arrive.
TEST_CASE("a cancel the server never answers holds no caller up, and its connection is not reused",
          "[pg][failover]") {
  const own_cluster cluster;
  pool_settings settings = superuser_pool(1);
  settings.commit_wait_max = std::chrono::milliseconds(1'000);
  pool connections(bankworker::crypto::secret::copy_of(cluster.url()), settings);
  const auto tenant = bankworker::crypto::random_uuid();
  const int backend = pooled_backend_pid(connections);
  const pid_t postmaster = parent_of(backend);
  REQUIRE(postmaster > 1);

  require_standby(cluster, "vanished_standby");
  std::mutex mutex;
  std::condition_variable changed;
  bool returned = false;
  std::optional<std::chrono::steady_clock::time_point> terminated;
  std::thread operator_([&] {
    // The commit is waiting for the standby; the server stops answering new connections, so the
    // watch's cancel (due after 1 s) hangs; then the backend is terminated, ending the commit.
    std::unique_lock lock(mutex);
    if (changed.wait_for(lock, std::chrono::milliseconds(300), [&] { return returned; })) return;
    stopped_process hung(postmaster);
    if (changed.wait_for(lock, std::chrono::milliseconds(2'500), [&] { return returned; })) return;
    terminated = std::chrono::steady_clock::now();
    ::kill(backend, SIGTERM);
    // A pool that waited for the cancel would wait until the postmaster answers: 20 s here.
    changed.wait_for(lock, std::chrono::seconds(20), [&] { return returned; });
  });
  CHECK_THROWS(with_tenant(connections, tenant, [](pqxx::work& tx) { tx.exec("INSERT INTO replication_probe VALUES (1)"); }));
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex);
    returned = true;
  }
  changed.notify_all();
  operator_.join();  // the postmaster answers again (and the cancel with it)
  REQUIRE(terminated.has_value());
  // Free within the cancel's grace (commit_watch::cancel_wait, 2 s) of the commit's end, not
  // when the server answers again (20 s).
  CHECK(now - *terminated < std::chrono::seconds(5));
  CHECK(connections.in_use() == 0);

  require_standby(cluster, "");
  auto lease = connections.checkout();
  CHECK(backend_pid(lease.connection()) != backend);
}

// The other half: a server that answers neither the cancel nor the commit. The watch cuts the
// connection off cancel_wait after its cancel, so the caller is free after commit_wait_max plus
// that, with the commit in doubt, however long the server stays hung.
TEST_CASE("a commit on a server that answers nothing is cut off after its cancel's grace, in doubt",
          "[pg][failover]") {
  const own_cluster cluster;
  pool_settings settings = superuser_pool(1);
  settings.commit_wait_max = std::chrono::milliseconds(1'000);
  pool connections(bankworker::crypto::secret::copy_of(cluster.url()), settings);
  const auto tenant = bankworker::crypto::random_uuid();
  const int backend = pooled_backend_pid(connections);
  const pid_t postmaster = parent_of(backend);
  REQUIRE(postmaster > 1);

  require_standby(cluster, "vanished_standby");
  std::mutex mutex;
  std::condition_variable changed;
  bool returned = false;
  std::thread operator_([&] {
    // The server stops answering new connections before the watch's cancel is due, and resumes
    // only after 20 s, or when the commit returned.
    std::unique_lock lock(mutex);
    if (changed.wait_for(lock, std::chrono::milliseconds(300), [&] { return returned; })) return;
    stopped_process hung(postmaster);
    changed.wait_for(lock, std::chrono::seconds(20), [&] { return returned; });
  });
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(with_tenant(connections, tenant,
                              [](pqxx::work& tx) { tx.exec("INSERT INTO replication_probe VALUES (1)"); }),
                  pqxx::in_doubt_error);
  const auto waited = std::chrono::steady_clock::now() - started;
  {
    std::lock_guard lock(mutex);
    returned = true;
  }
  changed.notify_all();
  operator_.join();
  // commit_wait_max (1 s) + a tick + cancel_wait (2 s) + a tick, not the 20 s the server stayed hung.
  CHECK(waited >= std::chrono::milliseconds(3'000));
  CHECK(waited < std::chrono::seconds(6));
  CHECK(connections.in_use() == 0);

  // The session it cut off is gone; the pool's next connection is a new one.
  require_standby(cluster, "");
  auto lease = connections.checkout();
  CHECK(backend_pid(lease.connection()) != backend);
}

// The pool checks a connection before reusing it after an error. On a server that answers
// nothing (in `make failover`, an old primary whose demotion stalled) that check would wait
// forever and, with it, whoever checked the connection out: it runs under the commit watch with
// connect_timeout as its limit. Here the session's own backend is stopped, so the check gets no
// answer and no cancel reaches it; the pool must cut it off and open a new connection.
TEST_CASE("a pooled connection whose server answers nothing is cut off at its check, and a new one opened",
          "[pg][failover]") {
  const own_cluster cluster;
  pool_settings settings = superuser_pool(1);
  settings.commit_wait_max = std::chrono::milliseconds(1'000);
  settings.connect_timeout = std::chrono::milliseconds(2'000);
  pool connections(bankworker::crypto::secret::copy_of(cluster.url()), settings);
  int backend = 0;
  try {
    auto lease = connections.checkout();
    backend = backend_pid(lease.connection());
    throw std::runtime_error("an error while the connection is out: it is checked before its next use");
  } catch (const std::runtime_error&) {
  }
  REQUIRE(backend > 0);
  std::mutex mutex;
  std::condition_variable changed;
  bool returned = false;
  bool stopped = false;
  std::thread operator_([&] {
    // The session's backend stops; it resumes when the checkout returned, or after 20 s.
    std::unique_lock lock(mutex);
    stopped_process hung(backend);
    stopped = true;
    changed.notify_all();
    changed.wait_for(lock, std::chrono::seconds(20), [&] { return returned; });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return stopped; });
  }
  const auto started = std::chrono::steady_clock::now();
  int fresh = 0;
  {
    auto lease = connections.checkout();
    fresh = backend_pid(lease.connection());
  }
  const auto waited = std::chrono::steady_clock::now() - started;
  {
    std::lock_guard lock(mutex);
    returned = true;
  }
  changed.notify_all();
  operator_.join();
  CHECK(fresh != backend);
  // connect_timeout (2 s) + a tick + cancel_wait (2 s) + a tick, not for as long as the server is hung.
  CHECK(waited >= std::chrono::milliseconds(2'000));
  CHECK(waited < std::chrono::seconds(8));
}
