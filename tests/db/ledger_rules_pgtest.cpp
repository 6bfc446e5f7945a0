// The ledger's rules are the database's own: they hold for any client, so these tests write SQL
// directly as the worker role, bypassing every line of C++.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;
using test::scratch_database;

namespace {

constexpr const char* entry_sql =
    "INSERT INTO bankworker.journal_entries (tenant_id, entry_id, idempotency_key, description, occurred_at)"
    " VALUES ($1::text::uuid, $2::text::uuid, $3, 'test', now())";
constexpr const char* line_sql =
    "INSERT INTO bankworker.journal_lines (tenant_id, entry_id, line_no, account_code, amount_minor, currency)"
    " VALUES ($1::text::uuid, $2::text::uuid, $3, $4, $5, $6)";

struct ledger_fixture {
  scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool();
  core::uuid tenant = ledger::create_tenant(*connections, *test::test_key_store(), "Ledger Ltd");
  std::string id = tenant.to_string();  // its chart of accounts (stripe.clearing, revenue, ...) came with it

  // Posts one entry with the given lines (account, amount, currency) in one transaction and one
  // statement, the entry and its lines together (migration 0049: an entry's lines come in the
  // statement that inserts it; 0047: they balance at the end of it).
  void post(const std::string& entry, const std::string& key,
            const std::vector<std::tuple<std::string, long, std::string>>& lines) {
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      std::string sql = "WITH e AS (INSERT INTO bankworker.journal_entries (tenant_id, entry_id, idempotency_key,"
                        " description, occurred_at) VALUES (" + tx.quote(id) + "::uuid, " + tx.quote(entry) + "::uuid, " +
                        tx.quote(key) + ", 'test', now()) RETURNING entry_id)";
      if (lines.empty()) {
        tx.exec(sql + " SELECT count(*) FROM e");
        return;
      }
      tx.exec(sql + " " + lines_insert(tx, entry, 0, lines));
    });
  }

  // The INSERT of `lines` into `entry`, numbered from `first_line`.
  std::string lines_insert(pqxx::work& tx, const std::string& entry, int first_line,
                           const std::vector<std::tuple<std::string, long, std::string>>& lines) const {
    std::string sql =
        "INSERT INTO bankworker.journal_lines (tenant_id, entry_id, line_no, account_code, amount_minor, currency) VALUES ";
    int line_no = first_line;
    for (const auto& [account, amount, currency] : lines) {
      if (line_no != first_line) sql += ", ";
      sql += "(" + tx.quote(id) + "::uuid, " + tx.quote(entry) + "::uuid, " + std::to_string(line_no++) + ", " +
             tx.quote(account) + ", " + std::to_string(amount) + ", " + tx.quote(currency) + ")";
    }
    return sql;
  }

  // Inserts `lines` into `entry` in one statement, numbered from `first_line`.
  void add_lines(pqxx::work& tx, const std::string& entry, int first_line,
                 const std::vector<std::tuple<std::string, long, std::string>>& lines) {
    tx.exec(lines_insert(tx, entry, first_line, lines));
  }
};

}  // namespace

TEST_CASE("a balanced entry commits", "[pg][ledger]") {
  ledger_fixture ledger;
  ledger.post("00000000-0000-4000-8000-000000000001", "ch_1:gross",
              {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  const auto lines = db::with_tenant(*ledger.connections, ledger.tenant, [](pqxx::work& tx) {
    return tx.exec1("SELECT count(*) FROM bankworker.journal_lines")[0].as<int>();
  });
  CHECK(lines == 2);
}

TEST_CASE("the database rejects an unbalanced entry, and one without lines", "[pg][ledger]") {
  ledger_fixture ledger;
  CHECK_THROWS_WITH(ledger.post("00000000-0000-4000-8000-000000000002", "ch_2:gross",
                                {{"stripe.clearing", 1000, "USD"}, {"revenue", -999, "USD"}}),
                    Catch::Contains("does not balance in USD"));
  // Balanced in total but not per currency.
  CHECK_THROWS_WITH(ledger.post("00000000-0000-4000-8000-000000000003", "ch_3:gross",
                                {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "EUR"}}),
                    Catch::Contains("does not balance"));
  CHECK_THROWS_WITH(ledger.post("00000000-0000-4000-8000-000000000004", "ch_4:gross", {{"revenue", 5, "JPY"}}),
                    Catch::Contains("at least two"));
  CHECK_THROWS_WITH(ledger.post("00000000-0000-4000-8000-000000000008", "ch_8:gross", {}),
                    Catch::Contains("has 0 line(s)"));
  // Several currencies, one of them off: the first unbalanced one in order is named.
  CHECK_THROWS_WITH(ledger.post("00000000-0000-4000-8000-000000000009", "ch_9:gross",
                                {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"},
                                 {"stripe.clearing", 700, "JPY"}, {"revenue", -600, "JPY"},
                                 {"stripe.clearing", 500, "EUR"}, {"revenue", -400, "EUR"}}),
                    Catch::Contains("does not balance in EUR"));
  const auto entries = db::with_tenant(*ledger.connections, ledger.tenant, [](pqxx::work& tx) {
    return tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>();
  });
  CHECK(entries == 0);
}

TEST_CASE("an entry whose lines come in a later statement is refused at its own statement", "[pg][ledger]") {
  // Migration 0049: an entry and its lines arrive in one statement; an entry never exists without
  // them, even inside a transaction that would add them next.
  ledger_fixture ledger;
  const std::string entry = "00000000-0000-4000-8000-00000000000f";
  CHECK_THROWS_WITH(db::with_tenant(*ledger.connections, ledger.tenant,
                                    [&](pqxx::work& tx) {
                                      tx.exec_params(entry_sql, ledger.id, entry, "ch_15:gross");
                                      ledger.add_lines(tx, entry, 0, {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
                                    }),
                    Catch::Contains("has 0 line(s)"));
  // The same entry and lines in one statement are posted.
  ledger.post(entry, "ch_15:gross", {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  CHECK(db::with_tenant(*ledger.connections, ledger.tenant, [](pqxx::work& tx) {
          return tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>();
        }) == 1);
}

TEST_CASE("lines added later to a posted entry must keep it balanced at the end of their statement", "[pg][ledger]") {
  ledger_fixture ledger;
  const std::string entry = "00000000-0000-4000-8000-00000000000a";
  ledger.post(entry, "ch_10:gross", {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  CHECK_THROWS_WITH(db::with_tenant(*ledger.connections, ledger.tenant,
                                    [&](pqxx::work& tx) {
                                      tx.exec_params(line_sql, ledger.id, entry, 2, "revenue", 1, "USD");
                                    }),
                    Catch::Contains("does not balance in USD"));
  // Two lines that cancel out, one statement each: the entry would be unbalanced between them,
  // which no statement may leave it (migration 0047), even if the next one would mend it.
  CHECK_THROWS_WITH(db::with_tenant(*ledger.connections, ledger.tenant,
                                    [&](pqxx::work& tx) {
                                      tx.exec_params(line_sql, ledger.id, entry, 2, "revenue", 1, "USD");
                                      tx.exec_params(line_sql, ledger.id, entry, 3, "stripe.clearing", -1, "USD");
                                    }),
                    Catch::Contains("does not balance in USD"));
  // In one statement they keep it balanced, so they are accepted.
  db::with_tenant(*ledger.connections, ledger.tenant, [&](pqxx::work& tx) {
    ledger.add_lines(tx, entry, 2, {{"revenue", 1, "USD"}, {"stripe.clearing", -1, "USD"}});
  });
  CHECK(db::with_tenant(*ledger.connections, ledger.tenant, [](pqxx::work& tx) {
          return tx.exec1("SELECT count(*) FROM bankworker.journal_lines")[0].as<int>();
        }) == 4);
}

TEST_CASE("a line must name an entry and an account of its tenant and a known currency", "[pg][ledger]") {
  ledger_fixture ledger;
  const std::string entry = "00000000-0000-4000-8000-00000000000b";
  CHECK_THROWS_WITH(db::with_tenant(*ledger.connections, ledger.tenant,
                                    [&](pqxx::work& tx) {
                                      ledger.add_lines(tx, entry, 0, {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
                                    }),
                    Catch::Contains("names journal entry " + entry + ", which does not exist"));
  CHECK_THROWS_WITH(ledger.post(entry, "ch_11:gross", {{"stripe.clearing", 1000, "USD"}, {"no.such.account", -1000, "USD"}}),
                    Catch::Contains("names ledger account no.such.account, which does not exist"));
  CHECK_THROWS_WITH(ledger.post(entry, "ch_11:gross", {{"stripe.clearing", 1000, "ZZZ"}, {"revenue", -1000, "ZZZ"}}),
                    Catch::Contains("names currency ZZZ"));
  // Another tenant's account of the same code does not count: accounts are per tenant.
  const core::uuid other = ledger::create_tenant(*ledger.connections, *test::test_key_store(), "Other Ltd");
  {
    const auto admin = ledger.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params("INSERT INTO bankworker.ledger_accounts (tenant_id, code, name, kind)"
                   " VALUES ($1::text::uuid, 'only.other', 'Other''s own', 'asset')",
                   other.to_string());
    tx.commit();
  }
  CHECK_THROWS_WITH(ledger.post(entry, "ch_11:gross", {{"stripe.clearing", 1000, "USD"}, {"only.other", -1000, "USD"}}),
                    Catch::Contains("names ledger account only.other"));
  // Nor does another tenant's entry of the same id: a line names an entry of its own tenant.
  const std::string others_entry = "00000000-0000-4000-8000-00000000000c";
  const core::uuid mine = ledger.tenant;
  ledger.tenant = other;
  ledger.id = other.to_string();
  ledger.post(others_entry, "ch_12:gross", {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  ledger.tenant = mine;
  ledger.id = mine.to_string();
  CHECK_THROWS_WITH(db::with_tenant(*ledger.connections, ledger.tenant,
                                    [&](pqxx::work& tx) {
                                      ledger.add_lines(tx, others_entry, 0,
                                                       {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
                                    }),
                    Catch::Contains("names journal entry " + others_entry + ", which does not exist"));
  CHECK(db::with_tenant(*ledger.connections, ledger.tenant, [](pqxx::work& tx) {
          return tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>();
        }) == 0);
}

TEST_CASE("a ledger account is never deleted or renamed, so no line loses its account", "[pg][ledger]") {
  ledger_fixture ledger;
  ledger.post("00000000-0000-4000-8000-00000000000c", "ch_12:gross",
              {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  const core::uuid other = ledger::create_tenant(*ledger.connections, *test::test_key_store(), "Other Ltd");
  const auto admin = ledger.database.connect_as_admin();
  const std::string move = "UPDATE bankworker.ledger_accounts SET tenant_id = '" + other.to_string() +
                           "', code = 'revenue.moved' WHERE tenant_id = '" + ledger.id + "' AND code = 'revenue'";
  for (const std::string& sql : {std::string("DELETE FROM bankworker.ledger_accounts WHERE code = 'revenue'"),
                                std::string("UPDATE bankworker.ledger_accounts SET code = 'revenue.renamed' WHERE code = 'revenue'"),
                                move, std::string("TRUNCATE bankworker.ledger_accounts CASCADE")}) {
    INFO(sql);
    pqxx::work tx(*admin);
    CHECK_THROWS_WITH(tx.exec(sql), Catch::Contains("never removed"));
  }
  // Its name and kind may change.
  pqxx::work tx(*admin);
  CHECK(tx.exec("UPDATE bankworker.ledger_accounts SET name = 'Sales' WHERE code = 'revenue' AND tenant_id = '" + ledger.id +
                "'").affected_rows() == 1);
}

TEST_CASE("posted journal rows cannot be updated, deleted or truncated, even by the cluster admin", "[pg][ledger]") {
  ledger_fixture ledger;
  ledger.post("00000000-0000-4000-8000-000000000005", "ch_5:gross",
              {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  const auto admin = ledger.database.connect_as_admin();
  for (const char* sql : {"UPDATE bankworker.journal_lines SET amount_minor = amount_minor * 2",
                          "DELETE FROM bankworker.journal_lines", "UPDATE bankworker.journal_entries SET description = 'x'",
                          "DELETE FROM bankworker.journal_entries", "TRUNCATE bankworker.journal_lines CASCADE",
                          "TRUNCATE bankworker.audit_log"}) {
    INFO(sql);
    pqxx::work tx(*admin);
    CHECK_THROWS_WITH(tx.exec(sql), Catch::Contains("immutable"));
  }
}

TEST_CASE("an idempotency key is unique per tenant", "[pg][ledger]") {
  ledger_fixture ledger;
  ledger.post("00000000-0000-4000-8000-000000000006", "ch_6:gross",
              {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}});
  CHECK_THROWS_AS(ledger.post("00000000-0000-4000-8000-000000000007", "ch_6:gross",
                              {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}}),
                  pqxx::unique_violation);
}

TEST_CASE("no event or entry names a tenant that does not exist, and a tenant with them is not deleted",
          "[pg][ledger][rls]") {
  // Migration 0053: stripe_events and journal_entries check their tenant once per statement, by
  // the scope that row security holds every row to, instead of a foreign key per row.
  ledger_fixture ledger;
  const std::string nobody = "00000000-0000-4000-8000-0000000000ee";
  const std::string event_sql =
      "INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, livemode, created_at, body)"
      " VALUES ($1::text::uuid, $2, 'payment_intent.succeeded', false, now(), '{}')";
  // The worker in the scope of a tenant that does not exist: row security lets the row in, the
  // tenant check refuses it.
  CHECK_THROWS_WITH(db::with_tenant(*ledger.connections, *core::uuid::parse(nobody),
                                    [&](pqxx::work& tx) { tx.exec_params(event_sql, nobody, "evt_nobody"); }),
                    Catch::Contains("names tenant " + nobody + ", which does not exist"));
  ledger.tenant = *core::uuid::parse(nobody);
  ledger.id = nobody;
  CHECK_THROWS_WITH(ledger.post("00000000-0000-4000-8000-0000000000e1", "ch_nobody:gross",
                                {{"stripe.clearing", 1000, "USD"}, {"revenue", -1000, "USD"}}),
                    Catch::Contains("which does not exist"));
  {
    const auto admin = ledger.database.connect_as_admin();
    pqxx::work tx(*admin);
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.stripe_events")[0].as<int>() == 0);
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>() == 0);
  }

  // A tenant that has nothing but a Stripe event (no keys, no accounts: no other foreign key holds
  // it) is not deleted while the event is there, and is once it is gone.
  const std::string bare = "00000000-0000-4000-8000-0000000000ef";
  const auto admin = ledger.database.connect_as_admin();
  {
    pqxx::work tx(*admin);
    tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1::text::uuid, 'Bare Ltd')", bare);
    tx.exec_params(event_sql, bare, "evt_bare");
    tx.commit();
  }
  {
    pqxx::work tx(*admin);
    CHECK_THROWS_WITH(tx.exec_params("DELETE FROM bankworker.tenants WHERE tenant_id = $1::text::uuid", bare),
                      Catch::Contains("still has Stripe events or journal entries"));
  }
  {
    pqxx::work tx(*admin);
    tx.exec_params("DELETE FROM bankworker.stripe_events WHERE tenant_id = $1::text::uuid", bare);
    CHECK(tx.exec_params("DELETE FROM bankworker.tenants WHERE tenant_id = $1::text::uuid", bare).affected_rows() == 1);
    tx.commit();
  }
}
