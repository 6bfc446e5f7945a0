// Failover symptoms as the database really produces them (db/connection_problem.hpp), and the
// pool's answer to each: drop the connection, reconnect, say once that the database is gone.
#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "db/connection_problem.hpp"
#include "db/pool.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/tcp_proxy.hpp"

using namespace bankworker::db;
using bankworker::test::scratch_database;

namespace {

// Runs `statement` on `connection` and returns what it threw (fails the test when nothing).
std::exception_ptr error_of(pqxx::connection& connection, const std::string& statement) {
  try {
    pqxx::work tx(connection);
    tx.exec(statement);
    tx.commit();
  } catch (...) {
    return std::current_exception();
  }
  FAIL("expected " << statement << " to fail");
  return nullptr;
}

bool classified(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return is_connection_problem(e);
  }
}

int backend_pid(pqxx::connection& connection) {
  pqxx::nontransaction tx(connection);
  return tx.exec1("SELECT pg_backend_pid()")[0].as<int>();
}

void terminate_backend(const scratch_database& database, int pid) {
  auto admin = database.connect_as_admin();
  pqxx::nontransaction tx(*admin);
  tx.exec_params("SELECT pg_terminate_backend($1)", pid);
  for (int i = 0; i < 100 && tx.exec_params1("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)[0].as<int>() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

TEST_CASE("a read-only server (25006) and a terminated session (57P01) are connection problems", "[pg][failover]") {
  const scratch_database database;
  auto connection = database.connect_as_admin();
  {
    pqxx::nontransaction tx(*connection);
    tx.exec("SET default_transaction_read_only = on");
  }
  const auto read_only = error_of(*connection, "CREATE TABLE failover_probe (id int)");
  try {
    std::rethrow_exception(read_only);
  } catch (const pqxx::sql_error& e) {
    CHECK(e.sqlstate() == "25006");
  }
  CHECK(classified(read_only));

  auto victim = database.connect_as_admin();
  terminate_backend(database, backend_pid(*victim));
  CHECK(classified(error_of(*victim, "SELECT 1")));
}

TEST_CASE("a job's own errors are not connection problems, and an in-doubt commit stays in doubt", "[pg][failover]") {
  const scratch_database database;
  auto connection = database.connect_as_admin();
  CHECK_FALSE(classified(error_of(*connection, "SELECT * FROM no_such_table")));
  CHECK_FALSE(classified(error_of(*connection, "SELECT 1/0")));
  CHECK_FALSE(classified(std::make_exception_ptr(pqxx::in_doubt_error("commit outcome unknown"))));
  CHECK_FALSE(classified(std::make_exception_ptr(std::runtime_error("Plaid answered 500"))));
  // Wrapped by a handler that added context, the cause still counts.
  std::exception_ptr nested;
  try {
    try {
      throw pqxx::broken_connection("server closed the connection unexpectedly");
    } catch (...) {
      std::throw_with_nested(std::runtime_error("storing the sync"));
    }
  } catch (...) {
    nested = std::current_exception();
  }
  CHECK(classified(nested));
}

TEST_CASE("a pooled connection whose session the server ended is replaced at checkout, unseen by the caller",
          "[pg][failover][pool]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  int first_pid = 0;
  {
    auto lease = connections->checkout();
    first_pid = backend_pid(lease.connection());
  }
  terminate_backend(database, first_pid);
  auto lease = connections->checkout();
  CHECK(backend_pid(lease.connection()) != first_pid);
  CHECK_FALSE(connections->unavailable_reason().has_value());
}

TEST_CASE("a pooled connection that met a read-only server is checked and replaced before its next use",
          "[pg][failover][pool]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  try {
    auto lease = connections->checkout();
    pqxx::nontransaction(lease.connection()).exec("SET default_transaction_read_only = on");
    pqxx::work tx(lease.connection());
    tx.exec("CREATE TABLE failover_probe (id int)");
    FAIL("a write on a read-only session succeeded");
  } catch (const pqxx::sql_error& error) {
    REQUIRE(is_connection_problem(error));
  }
  auto lease = connections->checkout();
  pqxx::nontransaction tx(lease.connection());
  CHECK(tx.exec1("SHOW default_transaction_read_only")[0].as<std::string>() == "off");
}

TEST_CASE("a server that is read-only from the start is refused at connect as no primary", "[pg][failover][pool]") {
  const scratch_database database;
  std::string url = database.runtime_url();
  url += (url.find('?') == std::string::npos ? "?" : "&");
  url += "options=-c%20default_transaction_read_only%3Don";
  pool_settings one_connection;
  one_connection.connections = 1;
  pool connections(bankworker::crypto::secret::copy_of(url), one_connection);
  try {
    connections.checkout();
    FAIL("a read-only server was accepted");
  } catch (const standby_error& error) {
    CHECK(is_no_primary(error));
    CHECK(is_connection_problem(error));
  }
}

TEST_CASE("the pool says once that the database is gone and once that it is back", "[pg][failover][pool]") {
  const scratch_database database;
  const auto [host, port] = bankworker::test::host_and_port(database.runtime_url());
  bankworker::test::tcp_proxy proxy(host, port);
  std::vector<bool> transitions;
  pool_settings settings;
  settings.connections = 2;
  settings.connect_timeout = std::chrono::milliseconds(1'000);
  settings.on_availability = [&transitions](bool available, const std::string&, std::chrono::milliseconds) {
    transitions.push_back(available);
  };
  pool connections(bankworker::crypto::secret::copy_of(bankworker::test::url_through(database.runtime_url(), proxy.port())),
                   settings);
  { auto lease = connections.checkout(); }
  proxy.set_down(true);
  for (int i = 0; i < 3; ++i) {
    try {
      auto lease = connections.checkout();
      pqxx::nontransaction(lease.connection()).exec("SELECT 1");
    } catch (const std::exception& error) {
      CHECK(is_connection_problem(error));
    }
  }
  CHECK(connections.unavailable_reason().has_value());
  proxy.set_down(false);
  auto lease = connections.checkout();
  pqxx::nontransaction(lease.connection()).exec("SELECT 1");
  CHECK_FALSE(connections.unavailable_reason().has_value());
  CHECK(transitions == std::vector<bool>{false, true});
}
