// Plaid's own published Transaction shapes (tests/fixtures/plaid, source in its README) through
// the page parser: every field the spec allows, every nullable field null, unknown fields.
#include <catch2/catch.hpp>

#include "connectors/plaid/sync_page.hpp"
#include "tests/support/fixture.hpp"

using namespace bankworker::plaid;
using bankworker::core::currency_table;
using bankworker::test::read_fixture;

namespace {

// ETH as migration 0030 declares it (9 decimals: see the migration for why not 18).
const currency_table currencies({{"USD", 2, true}, {"JPY", 0, true}, {"BTC", 8, false}, {"ETH", 9, false}});

std::string page_of(std::string_view added) {
  return R"({"accounts":[],"added":[)" + std::string(added) +
         R"(],"modified":[],"removed":[],"next_cursor":"c1","has_more":false,"request_id":"r1",)"
         R"("transactions_update_status":"HISTORICAL_UPDATE_COMPLETE"})";
}

page_result parse(const std::string& body, const currency_table& table = currencies) {
  simdjson::ondemand::parser parser;
  return parse_sync_page(parser, body, table);
}

}  // namespace

TEST_CASE("a Transaction with every field the spec allows, and fields it does not, normalises", "[plaid][fixtures]") {
  const page_result result = parse(page_of(read_fixture("plaid/transaction_every_field.json")));
  INFO(result.error);
  REQUIRE(result.ok);
  REQUIRE(result.page.added.size() == 1);
  const transaction& t = result.page.added[0];
  CHECK(t.transaction_id == "lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDje");
  CHECK(t.account_id == "BxBXxLj1m4HMXBm9WZZmCWVbPjX16EHwv99vp");
  CHECK(t.amount_minor == -7210);
  CHECK(t.currency == "USD");
  CHECK(t.official_currency);
  CHECK(t.date == "2023-09-24");
  CHECK(t.authorized_date == "2023-09-22");
  CHECK(t.name == "PURCHASE WM SUPERCENTER #1700");
  CHECK(t.merchant_name == "Walmart");
  CHECK(t.payment_channel == "in store");
  CHECK(t.category_primary == "GENERAL_MERCHANDISE");
  CHECK(t.category_detailed == "GENERAL_MERCHANDISE_SUPERSTORES");
  CHECK_FALSE(t.pending);
  CHECK(t.pending_transaction_id == "no86Eox18VHMvaOVL7gPUM9ap3aR1LsAVZ5nc");
}

TEST_CASE("a Transaction with every nullable field null and an unofficial currency normalises", "[plaid][fixtures]") {
  const page_result result = parse(page_of(read_fixture("plaid/transaction_nulls.json")));
  INFO(result.error);
  REQUIRE(result.ok);
  REQUIRE(result.page.added.size() == 1);
  const transaction& t = result.page.added[0];
  CHECK(t.amount_minor == -12'300'000);  // 0.0123 ETH out, in units of 1e-9 ETH
  CHECK(t.currency == "ETH");
  CHECK_FALSE(t.official_currency);
  CHECK_FALSE(t.authorized_date);
  CHECK_FALSE(t.merchant_name);
  CHECK_FALSE(t.category_primary);
  CHECK_FALSE(t.pending_transaction_id);
  CHECK(t.name == "PURCHASE WM SUPERCENTER #1700");
}

TEST_CASE("both published Transactions on one page keep their own currencies", "[plaid][fixtures]") {
  const page_result result = parse(page_of(read_fixture("plaid/transaction_every_field.json") + "," +
                                           read_fixture("plaid/transaction_nulls.json")));
  INFO(result.error);
  REQUIRE(result.ok);
  REQUIRE(result.page.added.size() == 2);
  CHECK(result.page.added[0].currency == "USD");
  CHECK(result.page.added[1].currency == "ETH");
}
