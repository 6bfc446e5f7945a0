// `bankworker export` end to end: the binary, a real database, the output parsed back.
#include <catch2/catch.hpp>

#include <simdjson.h>

#include "db/tenant_scope.hpp"
#include "ledger/export.hpp"
#include "ledger/ledger.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

struct books {
  test::scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool();
  core::uuid tenant = ledger::create_tenant(*connections, *test::test_key_store(), "Books, \"Quoted\" Ltd");
  core::uuid other = ledger::create_tenant(*connections, *test::test_key_store(), "Other");

  books() {
    db::with_tenant(*connections, tenant, [](pqxx::work& tx) {
      ledger::ensure_chart(tx);
      ledger::post_entry(tx, {"ch_1:gross", "Charge, with comma", 1'700'000'000, "evt_1",
                              {{"stripe.clearing", 2000, "USD"}, {"revenue", -2000, "USD"}}});
      ledger::post_entry(tx, {"ch_2:gross", "Yen charge", 1'700'000'100, "evt_2",
                              {{"stripe.clearing", 1500, "JPY"}, {"revenue", -1500, "JPY"}}});
      ledger::post_entry(tx, {"ch_3:gross", "Dinar charge", 1'700'000'200, "evt_3",
                              {{"stripe.clearing", 12345, "BHD"}, {"revenue", -12345, "BHD"}}});
    });
    db::with_tenant(*connections, other, [](pqxx::work& tx) {
      ledger::ensure_chart(tx);
      ledger::post_entry(tx, {"ch_x:gross", "not theirs", 1'700'000'000, "evt_x",
                              {{"stripe.clearing", 999, "USD"}, {"revenue", -999, "USD"}}});
    });
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params(
        "INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
        " VALUES ($1::text::uuid, '00000000-0000-4000-8000-00000000000c', 'sandbox', 'active');"
        "",
        tenant.to_string());
    tx.exec_params(
        "INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
        " currency, date, name, pending) VALUES ($1::text::uuid, 'txn_a', 'acc_1',"
        " '00000000-0000-4000-8000-00000000000c', -7210, 'USD', DATE '2026-11-20', 'Walmart', false)",
        tenant.to_string());
    tx.commit();
  }
};

}  // namespace

TEST_CASE("decimal text places the point by the currency's exponent without floating point", "[ledger][export]") {
  CHECK(ledger::decimal_text(1234, 2) == "12.34");
  CHECK(ledger::decimal_text(-5, 3) == "-0.005");
  CHECK(ledger::decimal_text(1500, 0) == "1500");
  CHECK(ledger::decimal_text(7, 2) == "0.07");
  CHECK(ledger::decimal_text(INT64_MIN, 2) == "-92233720368547758.08");
}

TEST_CASE("export --format json prints the tenant's books, exactly, and only that tenant's", "[pg][ledger][export]") {
  books b;
  const auto result = test::run_bankworker({"export", "--tenant", b.tenant.to_string(), "--format", "json"},
                                           {{"BANKWORKER_DATABASE_URL", b.database.runtime_url()}});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(result.out).get(doc) == simdjson::SUCCESS);
  CHECK(std::string_view(doc["name"]) == "Books, \"Quoted\" Ltd");
  CHECK(simdjson::dom::array(doc["journal_entries"]).size() == 3);
  for (simdjson::dom::element total : simdjson::dom::array(doc["trial_balance"])) {
    CHECK(int64_t(total["total_minor"]) == 0);
  }
  bool saw_bhd = false;
  for (simdjson::dom::element account : simdjson::dom::array(doc["accounts"])) {
    if (std::string_view(account["code"]) == "stripe.clearing" && !account["currency"].is_null() &&
        std::string_view(account["currency"]) == "BHD") {
      CHECK(std::string_view(account["balance"]) == "12.345");
      saw_bhd = true;
    }
  }
  CHECK(saw_bhd);
  simdjson::dom::array transactions = doc["transactions"];
  REQUIRE(transactions.size() == 1);
  CHECK(std::string_view(transactions.at(0)["amount"]) == "-72.10");
  CHECK(result.out.find("not theirs") == std::string::npos);
}

TEST_CASE("export --format csv quotes text and keeps amounts exact", "[pg][ledger][export]") {
  books b;
  const auto result = test::run_bankworker({"export", "--tenant", b.tenant.to_string(), "--format", "csv"},
                                           {{"BANKWORKER_DATABASE_URL", b.database.runtime_url()}});
  REQUIRE(result.exit_code == 0);
  CHECK(result.out.starts_with("section,key,date,account,currency,amount_minor,amount,description\n"));
  CHECK(result.out.find("entry_line,ch_1:gross,2023-11-14T22:13:20Z,stripe.clearing,USD,2000,20.00,\"Charge, with comma\"\n") !=
        std::string::npos);
  CHECK(result.out.find("entry_line,ch_2:gross,2023-11-14T22:15:00Z,revenue,JPY,-1500,-1500,Yen charge\n") !=
        std::string::npos);
  CHECK(result.out.find("transaction,txn_a,2026-11-20,acc_1,USD,-7210,-72.10,Walmart\n") != std::string::npos);
  CHECK(result.out.find("trial_balance,,,,USD,0,0.00,\n") != std::string::npos);
}

TEST_CASE("export refuses a malformed or unknown tenant", "[pg][ledger][export]") {
  test::scratch_database database;
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto malformed = test::run_bankworker({"export", "--tenant", "'; DROP TABLE x; --"}, env);
  CHECK(malformed.exit_code == 2);
  const auto unknown = test::run_bankworker({"export", "--tenant", "00000000-0000-4000-8000-000000000000"}, env);
  CHECK(unknown.exit_code == 1);
  CHECK_THAT(unknown.err, Catch::Contains("unknown tenant"));
  const auto format = test::run_bankworker({"export", "--tenant", "00000000-0000-4000-8000-000000000000", "--format", "xml"}, env);
  CHECK(format.exit_code == 2);
}
