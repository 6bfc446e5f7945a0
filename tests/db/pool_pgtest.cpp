#include <catch2/catch.hpp>

#include <chrono>

#include <pqxx/pqxx>

#include "crypto/random.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker::db;
using bankworker::test::scratch_database;

TEST_CASE("every pooled connection runs as bankworker_worker with its timeouts set", "[pg][pool]") {
  const scratch_database database;
  pool_settings settings;
  settings.statement_timeout = std::chrono::milliseconds(1234);
  settings.idle_in_transaction_timeout = std::chrono::milliseconds(5678);
  const auto connections = database.worker_pool(settings);
  auto lease = connections->checkout();
  pqxx::work tx(lease.connection());
  const auto row = tx.exec1(
      "SELECT current_user, current_setting('statement_timeout'),"
      " current_setting('idle_in_transaction_session_timeout'), current_setting('lock_timeout')");
  CHECK(row[0].as<std::string>() == "bankworker_worker");
  CHECK(row[1].as<std::string>() == "1234ms");
  CHECK(row[2].as<std::string>() == "5678ms");
  CHECK(row[3].as<std::string>() == "10s");
}

TEST_CASE("a statement running past statement_timeout is cancelled", "[pg][pool]") {
  const scratch_database database;
  pool_settings settings;
  settings.statement_timeout = std::chrono::milliseconds(100);
  const auto connections = database.worker_pool(settings);
  auto lease = connections->checkout();
  pqxx::work tx(lease.connection());
  // libpqxx 6.4 has no class for SQLSTATE 57014 (query_canceled); check the state itself.
  try {
    tx.exec("SELECT pg_sleep(5)");
    FAIL("pg_sleep(5) was not cancelled by a 100 ms statement_timeout");
  } catch (const pqxx::sql_error& error) {
    CHECK(error.sqlstate() == "57014");
  }
}

TEST_CASE("checkout waits at most checkout_timeout when every connection is busy", "[pg][pool]") {
  const scratch_database database;
  pool_settings settings;
  settings.connections = 1;
  settings.checkout_timeout = std::chrono::milliseconds(200);
  const auto connections = database.worker_pool(settings);
  auto held = connections->checkout();
  const auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(connections->checkout(), pool_timeout);
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(waited >= std::chrono::milliseconds(200));
  CHECK(waited < std::chrono::seconds(5));
}

TEST_CASE("a released connection is reused and a discarded one is replaced", "[pg][pool]") {
  const scratch_database database;
  pool_settings settings;
  settings.connections = 1;
  const auto connections = database.worker_pool(settings);
  int first_pid = 0;
  {
    auto lease = connections->checkout();
    first_pid = lease.connection().backendpid();
  }
  {
    auto lease = connections->checkout();
    CHECK(lease.connection().backendpid() == first_pid);
    lease.discard();
  }
  auto lease = connections->checkout();
  CHECK(lease.connection().backendpid() != first_pid);
}

TEST_CASE("an unreachable database fails checkout and frees the slot for the next try", "[pg][pool]") {
  pool_settings settings;
  settings.connections = 1;
  settings.checkout_timeout = std::chrono::milliseconds(200);
  pool connections(bankworker::crypto::secret::copy_of("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"),
                   settings);
  CHECK_THROWS_AS(connections.checkout(), pqxx::broken_connection);
  CHECK_THROWS_AS(connections.checkout(), pqxx::broken_connection);  // not pool_timeout: the slot came back
}

TEST_CASE("the tenant scope ends with its transaction", "[pg][pool][tenant]") {
  const scratch_database database;
  pool_settings settings;
  settings.connections = 1;
  const auto connections = database.worker_pool(settings);
  const auto tenant = bankworker::ledger::create_tenant(*connections, *bankworker::test::test_key_store(), "Scope Ltd");

  const auto seen = with_tenant(*connections, tenant, [](pqxx::work& tx) {
    return tx.exec1("SELECT current_setting('bankworker.tenant_id'), count(*) FROM bankworker.tenants")[1].as<int>();
  });
  CHECK(seen == 1);

  auto lease = connections->checkout();
  pqxx::work tx(lease.connection());
  const auto after = tx.exec1("SELECT coalesce(current_setting('bankworker.tenant_id', true), '')")[0];
  CHECK(after.as<std::string>().empty());
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.tenants")[0].as<int>() == 0);
}

TEST_CASE("an exception inside the tenant scope rolls the work back", "[pg][pool][tenant]") {
  const scratch_database database;
  const auto connections = database.worker_pool();
  const auto tenant = bankworker::ledger::create_tenant(*connections, *bankworker::test::test_key_store(), "Rollback Ltd");
  struct boom {};
  CHECK_THROWS_AS(with_tenant(*connections, tenant,
                              [](pqxx::work& tx) {
                                tx.exec("UPDATE bankworker.tenants SET name = 'changed'");
                                throw boom{};
                              }),
                  boom);
  const auto name = with_tenant(*connections, tenant, [](pqxx::work& tx) {
    return tx.exec1("SELECT name FROM bankworker.tenants")[0].as<std::string>();
  });
  CHECK(name == "Rollback Ltd");
}
