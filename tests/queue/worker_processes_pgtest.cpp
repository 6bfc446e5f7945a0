// The worker process list (queue/worker_processes.cpp, migration 0042) against the private
// PostgreSQL, as the runtime role: a process registers, its heartbeats move its last beat, it turns
// silent after three intervals without one and stopped when it says so, rows gone quiet for a day
// are pruned, and the runtime role cannot touch the table except through the functions.
#include <catch2/catch.hpp>

#include <atomic>

#include <pqxx/pqxx>

#include "crypto/random.hpp"
#include "queue/worker_processes.hpp"
#include "tests/support/scratch_database.hpp"

using namespace std::chrono_literals;
using bankworker::test::scratch_database;
namespace queue = bankworker::queue;

namespace {

// A clock the test moves; starts at the database's now.
struct test_clock {
  std::atomic<std::int64_t> now_us{
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count()};
  queue::time_point now() const { return queue::time_point(std::chrono::microseconds(now_us.load())); }
  void advance(std::chrono::microseconds by) { now_us += by.count(); }
  queue::clock_function function() { return [this] { return now(); }; }
};

queue::worker_process_identity identity(std::string hostname, std::int32_t pid) {
  return {.id = bankworker::crypto::random_uuid(), .hostname = std::move(hostname), .pid = pid, .version = "0.9.0",
          .heartbeat_interval = 10s};
}

std::vector<queue::worker_process_row> listed(bankworker::db::pool& connections, const test_clock& clock) {
  auto lease = connections.checkout();
  pqxx::read_transaction tx(lease.connection());
  return queue::list_worker_processes(tx, 100, clock.now());
}

const queue::worker_process_row* find(const std::vector<queue::worker_process_row>& rows, const queue::worker_process_identity& who) {
  for (const auto& row : rows) {
    if (row.process_id == who.id.to_string()) return &row;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("a process registers, its heartbeat keeps it alive, it turns silent without one and stopped on shutdown",
          "[pg][worker_processes]") {
  const scratch_database database;
  const auto connections = database.worker_pool(std::size_t{2});
  test_clock clock;
  queue::worker_process_record process(*connections, identity("host-a", 4242), clock.function());

  process.beat();
  auto rows = listed(*connections, clock);
  REQUIRE(rows.size() == 1);
  const auto* row = find(rows, process.identity());
  REQUIRE(row != nullptr);
  CHECK(row->hostname == "host-a");
  CHECK(row->pid == 4242);
  CHECK(row->version == "0.9.0");
  CHECK(row->state == "alive");
  CHECK(row->heartbeat_age_s == 0);
  CHECK_FALSE(row->stopped_at);
  const std::string started = row->started_at;

  // 25 s later, within three 10 s intervals: still alive, the beat 25 s old.
  clock.advance(25s);
  rows = listed(*connections, clock);
  CHECK(find(rows, process.identity())->state == "alive");
  CHECK(find(rows, process.identity())->heartbeat_age_s == 25);
  // A beat moves the last heartbeat, not the start.
  process.beat();
  clock.advance(20s);
  rows = listed(*connections, clock);
  CHECK(find(rows, process.identity())->state == "alive");
  CHECK(find(rows, process.identity())->heartbeat_age_s == 20);
  CHECK(find(rows, process.identity())->started_at == started);
  // 31 s without a beat (over three intervals): silent.
  clock.advance(11s);
  rows = listed(*connections, clock);
  CHECK(find(rows, process.identity())->state == "silent");

  // Shutdown: stopped, once; a late beat does not bring it back.
  CHECK(process.stop());
  CHECK_FALSE(process.stop());
  process.beat();
  clock.advance(1h);
  rows = listed(*connections, clock);
  REQUIRE(find(rows, process.identity()) != nullptr);
  CHECK(find(rows, process.identity())->state == "stopped");
  CHECK(find(rows, process.identity())->stopped_at);
}

TEST_CASE("processes are listed live first, and a day after they stopped or went silent the next beat prunes them",
          "[pg][worker_processes]") {
  const scratch_database database;
  const auto connections = database.worker_pool(std::size_t{2});
  test_clock clock;
  queue::worker_process_record stopped(*connections, identity("host-c", 3), clock.function());
  queue::worker_process_record silent(*connections, identity("host-b", 2), clock.function());
  queue::worker_process_record alive(*connections, identity("host-z", 1), clock.function());
  stopped.beat();
  silent.beat();
  alive.beat();
  stopped.stop();
  clock.advance(40s);
  alive.beat();
  auto rows = listed(*connections, clock);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].hostname == "host-z");
  CHECK(rows[0].state == "alive");
  CHECK(rows[1].hostname == "host-b");
  CHECK(rows[1].state == "silent");
  CHECK(rows[2].hostname == "host-c");
  CHECK(rows[2].state == "stopped");

  // A day later the live process's beat prunes the other two; its own row stays.
  clock.advance(24h + 1s);
  alive.beat();
  rows = listed(*connections, clock);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].process_id == alive.identity().id.to_string());
}

TEST_CASE("the runtime role reaches the process list only through its functions", "[pg][worker_processes]") {
  const scratch_database database;
  const auto connections = database.worker_pool(std::size_t{1});
  queue::worker_process_record process(*connections, identity("host-a", 7), {});
  process.beat();
  pqxx::connection worker(database.runtime_url());
  for (const char* sql : {"SELECT count(*) FROM bankworker.worker_processes",
                          "UPDATE bankworker.worker_processes SET hostname = 'forged'",
                          "DELETE FROM bankworker.worker_processes",
                          "INSERT INTO bankworker.worker_processes (process_id, hostname, os_pid, version,"
                          " heartbeat_interval_ms, started_at, last_heartbeat_at)"
                          " VALUES (gen_random_uuid(), 'forged', 1, '', 1000, now(), now())"}) {
    INFO(sql);
    pqxx::work tx(worker);
    CHECK_THROWS_WITH(tx.exec(sql), Catch::Contains("permission denied"));
  }
  // A beat under another process's id moves its heartbeat only: host, pid and version stay.
  pqxx::work tx(worker);
  tx.exec_params("SELECT bankworker.beat_worker_process($1, 'forged', 8, 'forged', 1000, NULL)",
                 process.identity().id.to_string());
  const pqxx::row row = tx.exec1("SELECT hostname, os_pid, version FROM bankworker.worker_processes(10, NULL)");
  CHECK(row[0].as<std::string>() == "host-a");
  CHECK(row[1].as<int>() == 7);
  CHECK(row[2].as<std::string>() == "0.9.0");

  // The customer's app sees no process at all.
  pqxx::connection app(database.app_url());
  pqxx::work app_tx(app);
  CHECK_THROWS_WITH(app_tx.exec("SELECT count(*) FROM bankworker.worker_processes(10, NULL)"),
                    Catch::Contains("permission denied"));
}

TEST_CASE("a process's identity is checked and its texts are cut to the table's limits", "[pg][worker_processes]") {
  const scratch_database database;
  const auto connections = database.worker_pool(std::size_t{1});
  CHECK_THROWS_AS(queue::worker_process_record(*connections, identity("h", 0)), std::invalid_argument);
  auto too_fast = identity("h", 1);
  too_fast.heartbeat_interval = 10ms;
  CHECK_THROWS_AS(queue::worker_process_record(*connections, too_fast), std::invalid_argument);
  auto long_names = identity(std::string(300, 'h'), 1);
  long_names.version = std::string(100, 'v');
  long_names.hostname = "";
  queue::worker_process_record unnamed(*connections, long_names);
  unnamed.beat();
  auto lease = connections->checkout();
  pqxx::read_transaction tx(lease.connection());
  const auto rows = queue::list_worker_processes(tx, 10);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].hostname == "unknown");
  CHECK(rows[0].version == std::string(queue::worker_version_bytes_max, 'v'));
}
