// plaid::apply_sync against the private PostgreSQL: what a connection's first sync may skip, and
// what it must still do.
#include <catch2/catch.hpp>

#include <string>

#include <pqxx/pqxx>

#include "crypto/random.hpp"
#include "connectors/plaid/store.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using bankworker::core::uuid;
using bankworker::test::scratch_database;
namespace db = bankworker::db;
namespace ledger = bankworker::ledger;
namespace plaid = bankworker::plaid;

namespace {

plaid::transaction bank_row(std::string id, bool pending, std::optional<std::string> pending_id = std::nullopt) {
  plaid::transaction row;
  row.transaction_id = std::move(id);
  row.account_id = "acc-1";
  row.amount_minor = -1250;
  row.currency = "USD";
  row.date = "2026-11-20";
  row.name = "Corner Coffee";
  row.pending = pending;
  row.pending_transaction_id = std::move(pending_id);
  return row;
}

struct one_connection {
  const scratch_database database;
  const std::unique_ptr<db::pool> connections = database.worker_pool(2);
  const std::unique_ptr<db::key_store> keys = bankworker::test::test_key_store();
  const uuid tenant = ledger::create_tenant(*connections, *keys, "store tenant", "test");
  const uuid connection = bankworker::crypto::random_uuid();

  one_connection() {
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      plaid::new_plaid_connection row;
      row.connection = connection;
      row.environment = "sandbox";
      row.item_id = "item-1";
      plaid::insert_plaid_connection(tx, tenant, row);
    });
  }

  plaid::apply_counts apply(const plaid::sync_changes& changes, const std::string& cursor, bool first_sync) {
    return db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      return plaid::apply_sync(tx, tenant, connection, changes, cursor, first_sync);
    });
  }

  long count(const std::string& where) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    return tx.exec1("SELECT count(*) FROM bankworker.transactions WHERE " + where)[0].as<long>();
  }
};

}  // namespace

TEST_CASE("a first sync tombstones a pending row of its own batch that a posted row replaces, and nothing else",
          "[pg][plaid_store]") {
  one_connection world;
  plaid::sync_changes first;
  first.upserts = {bank_row("pending-1", true), bank_row("posted-1", false, "pending-1"),
                   bank_row("posted-2", false, "pending-elsewhere"), bank_row("pending-2", true)};
  first.posted_pending = {"pending-1", "pending-elsewhere"};
  first.removals = {"never-stored"};
  const plaid::apply_counts counts = world.apply(first, "cursor-1", true);
  CHECK(counts.upserted == 4);
  CHECK(counts.tombstoned == 1);
  CHECK(world.count("transaction_id = 'pending-1' AND removed_at IS NOT NULL") == 1);
  CHECK(world.count("removed_at IS NULL") == 3);
  CHECK(world.count("transaction_id = 'pending-2' AND pending AND removed_at IS NULL") == 1);

  // Later syncs tombstone rows stored before: the removal and a pending row posted now.
  plaid::sync_changes later;
  later.upserts = {bank_row("posted-3", false, "pending-2")};
  later.posted_pending = {"pending-2"};
  later.removals = {"posted-2"};
  const plaid::apply_counts later_counts = world.apply(later, "cursor-2", false);
  CHECK(later_counts.upserted == 1);
  CHECK(later_counts.tombstoned == 2);
  CHECK(world.count("transaction_id IN ('pending-2', 'posted-2') AND removed_at IS NOT NULL") == 2);
  CHECK(world.count("removed_at IS NULL") == 2);
}

TEST_CASE("bank transactions naming an unknown currency or connection are refused by the database, currency first",
          "[pg][plaid_store]") {
  one_connection world;
  // Runs `sql` as the worker in the tenant's scope; returns the error, or "accepted".
  const auto attempt = [&](const std::string& sql) -> std::string {
    try {
      db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
        tx.exec_params(sql, world.tenant.to_string(), world.connection.to_string());
      });
    } catch (const pqxx::foreign_key_violation& error) {
      return error.what();
    }
    return "accepted";
  };
  const std::string insert =
      "INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
      " currency, date, name, pending) VALUES ";
  const auto row = [](const std::string& id, const std::string& connection, const std::string& currency) {
    return "($1::uuid, '" + id + "', 'acc-1', " + connection + ", 100, '" + currency + "', '2026-11-20', 'x', false)";
  };
  const std::string elsewhere = "'" + bankworker::crypto::random_uuid().to_string() + "'::uuid";

  CHECK_THAT(attempt(insert + row("t1", "$2::uuid", "USD") + "," + row("t2", "$2::uuid", "XQQ")),
             Catch::Contains("currency XQQ of a bank transaction is not in bankworker.currencies"));
  CHECK_THAT(attempt(insert + row("t1", "$2::uuid", "USD") + "," + row("t2", elsewhere, "USD")),
             Catch::Contains("connection") && Catch::Contains("is not in bankworker.connections"));
  // Both wrong, in different rows: the currency is named.
  CHECK_THAT(attempt(insert + row("t1", elsewhere, "USD") + "," + row("t2", "$2::uuid", "XQQ")),
             Catch::Contains("currency XQQ"));
  CHECK(world.count("true") == 0);

  REQUIRE(attempt(insert + row("t1", "$2::uuid", "USD") + "," + row("t2", "$2::uuid", "JPY")) == "accepted");
  CHECK_THAT(attempt("UPDATE bankworker.transactions SET currency = 'XQQ' WHERE transaction_id = 't2'"
                     " AND tenant_id = $1::uuid AND connection_id = $2::uuid"),
             Catch::Contains("currency XQQ"));
  CHECK(world.count("currency = 'JPY'") == 1);
}
