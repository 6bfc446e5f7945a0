// Plaid's own published Transaction shapes (tests/fixtures/plaid, source in its README) through
// the page parser: every field the spec allows, every nullable field null, unknown fields.
#include <catch2/catch.hpp>

#include <tuple>

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

// What the parser keeps of a transaction, for comparing two whole.
auto kept(const transaction& t) {
  return std::tie(t.transaction_id, t.account_id, t.amount_minor, t.currency, t.official_currency, t.date,
                  t.authorized_date, t.name, t.merchant_name, t.payment_channel, t.category_primary,
                  t.category_detailed, t.pending, t.pending_transaction_id);
}

}  // namespace

TEST_CASE("a Transaction with every field the spec allows, and fields it does not, normalises", "[plaid][fixtures]") {
  const page_result result = parse(page_of(read_fixture("plaid/transaction_every_field.json")));
  INFO(result.error);
  REQUIRE(result.ok);
  REQUIRE(result.page.added.size() == 1);
  // It is the published example's transaction plus fields we do not store: it normalises the
  // same (tests/connectors/plaid/sync_page_test.cpp checks that one field by field).
  const page_result example = parse(read_fixture("plaid/transactions_sync_example.json"));
  REQUIRE(example.ok);
  CHECK(kept(result.page.added[0]) == kept(example.page.added.at(0)));
  CHECK(result.page.added[0].amount_minor == -7210);
  CHECK(result.page.added[0].category_primary == "GENERAL_MERCHANDISE");
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

TEST_CASE("rows in currencies the table does not know are set aside raw; the rest of the page applies",
          "[plaid][fixtures][quarantine]") {
  // The published transaction in ETH, with ETH undeclared; a USD and an ETH account; a JPY amount
  // finer than yen; a transaction with no currency at all.
  const currency_table without_eth({{"USD", 2, true}, {"JPY", 0, true}});
  std::string eth_transaction = read_fixture("plaid/transaction_nulls.json");
  while (!eth_transaction.empty() && eth_transaction.back() == '\n') eth_transaction.pop_back();
  const std::string body =
      R"({"accounts":[{"account_id":"acc_usd","balances":{"current":10.5,"iso_currency_code":"USD"},"name":"Checking","type":"depository"},)"
      R"(  {"account_id":"acc_eth","balances":{"current":1.25,"iso_currency_code":null,"unofficial_currency_code":"ETH"},"name":"Wallet","type":"investment"}],)"
      R"("added":[)" + read_fixture("plaid/transaction_every_field.json") + "," + eth_transaction + "  \n," +
      R"({"transaction_id":"t_yen","account_id":"acc_jpy","amount":1.5,"iso_currency_code":"JPY","date":"2026-11-20","pending":false}],)"
      R"("modified":[{"transaction_id":"t_none","account_id":"acc_usd","amount":1,"iso_currency_code":null,)"
      R"("unofficial_currency_code":null,"date":"2026-11-20","pending":false}],)"
      R"("removed":[],"next_cursor":"c2","has_more":false})";

  SECTION("by default the page fails, naming the row, as before issue #16") {
    const page_result result = parse(body, without_eth);
    CHECK_FALSE(result.ok);
    CHECK_THAT(result.error, Catch::Contains("accounts[1].balances: unknown currency 'ETH'"));
  }
  SECTION("set aside: the page is ok and every rejected row comes back raw with its reason") {
    simdjson::ondemand::parser parser;
    const page_result result = parse_sync_page(parser, body, without_eth, 0, money_rows::set_aside);
    INFO(result.error);
    REQUIRE(result.ok);
    CHECK(result.page.next_cursor == "c2");
    REQUIRE(result.page.accounts.size() == 1);
    CHECK(result.page.accounts[0].account_id == "acc_usd");
    REQUIRE(result.page.added.size() == 1);
    CHECK(result.page.added[0].currency == "USD");
    CHECK(result.page.modified.empty());
    REQUIRE(result.page.rejected.size() == 4);

    const rejected_row& wallet = result.page.rejected[0];
    CHECK(wallet.kind == rejected_row::row_kind::account);
    CHECK(wallet.list == "accounts");
    CHECK(wallet.plaid_id == "acc_eth");
    CHECK(wallet.reason == rejection_reason::unknown_currency);
    CHECK(wallet.currency == "ETH");
    CHECK_THAT(wallet.raw_json, Catch::StartsWith(R"({"account_id":"acc_eth")") && Catch::EndsWith(R"("investment"})"));

    const rejected_row& eth = result.page.rejected[1];
    CHECK(eth.kind == rejected_row::row_kind::transaction);
    CHECK(eth.list == "added");
    CHECK(eth.plaid_id == "lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDjf");
    CHECK(eth.account_id == "BxBXxLj1m4HMXBm9WZZmCWVbPjX16EHwv99vp");
    CHECK(eth.reason == rejection_reason::unknown_currency);
    CHECK(eth.currency == "ETH");
    CHECK_THAT(eth.detail, Catch::Contains("added[1]: unknown currency 'ETH'"));
    CHECK(eth.raw_json == eth_transaction);  // byte for byte, nulls and unknown fields included

    const rejected_row& yen = result.page.rejected[2];
    CHECK(yen.plaid_id == "t_yen");
    CHECK(yen.reason == rejection_reason::amount_unrepresentable);
    CHECK(yen.currency == "JPY");

    const rejected_row& none = result.page.rejected[3];
    CHECK(none.list == "modified");
    CHECK(none.plaid_id == "t_none");
    CHECK(none.reason == rejection_reason::no_currency);
    CHECK_FALSE(none.currency);
    CHECK(to_string(none.reason) == "no_currency");
  }
  SECTION("once ETH is declared the same page applies whole but for the yen and the currency-less row") {
    simdjson::ondemand::parser parser;
    const page_result result = parse_sync_page(parser, body, currencies, 0, money_rows::set_aside);
    REQUIRE(result.ok);
    CHECK(result.page.accounts.size() == 2);
    CHECK(result.page.added.size() == 2);
    CHECK(result.page.rejected.size() == 2);
  }
}

TEST_CASE("a row malformed in anything but its money still fails the page when rows are set aside",
          "[plaid][fixtures][quarantine]") {
  simdjson::ondemand::parser parser;
  const page_result result = parse_sync_page(
      parser,
      page_of(R"({"account_id":"a1","amount":1,"iso_currency_code":"ZZZ","date":"2026-11-20","pending":false})"),
      currencies, 0, money_rows::set_aside);
  CHECK_FALSE(result.ok);
  CHECK_THAT(result.error, Catch::Contains("transaction_id missing"));
}

TEST_CASE("an accounts page sets aside an account in an undeclared currency", "[plaid][fixtures][quarantine]") {
  simdjson::ondemand::parser parser;
  const accounts_page_result result = parse_accounts_page(
      parser,
      R"({"accounts":[{"account_id":"acc_usdt","balances":{"current":5,"unofficial_currency_code":"USDT"},"type":"investment"}],)"
      R"("item":{"item_id":"item_1"}})",
      currencies, money_rows::set_aside);
  REQUIRE(result.ok);
  CHECK(result.page.accounts.empty());
  REQUIRE(result.page.rejected.size() == 1);
  CHECK(result.page.rejected[0].plaid_id == "acc_usdt");
  CHECK(result.page.rejected[0].currency == "USDT");
}
