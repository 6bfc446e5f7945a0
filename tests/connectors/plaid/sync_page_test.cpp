#include <catch2/catch.hpp>

#include "connectors/plaid/sync_page.hpp"
#include "tests/support/fixture.hpp"

using namespace bankworker::plaid;
using bankworker::core::currency;
using bankworker::core::currency_table;
using bankworker::test::read_fixture;

namespace {

const currency_table currencies({{"USD", 2, true}, {"EUR", 2, true}, {"JPY", 0, true}, {"BHD", 3, true},
                                 {"BTC", 8, false}});

page_result parse(std::string_view body) {
  simdjson::ondemand::parser parser;
  return parse_sync_page(parser, body, currencies);
}

std::string page_with(std::string_view transaction_json) {
  return R"({"added":[)" + std::string(transaction_json) + R"(],"modified":[],"removed":[],"next_cursor":"c1","has_more":false})";
}

constexpr std::string_view base_transaction =
    R"({"transaction_id":"t1","account_id":"a1","amount":AMOUNT,"iso_currency_code":ISO,)"
    R"("unofficial_currency_code":UNOFFICIAL,"date":"2026-11-20","name":"Coffee","pending":false})";

std::string transaction_with(std::string_view amount, std::string_view iso, std::string_view unofficial) {
  std::string text(base_transaction);
  text.replace(text.find("AMOUNT"), 6, amount);
  text.replace(text.find("ISO"), 3, iso);
  text.replace(text.find("UNOFFICIAL"), 10, unofficial);
  return text;
}

}  // namespace

TEST_CASE("the OpenAPI spec's /transactions/sync example normalises exactly", "[plaid][sync_page]") {
  const page_result result = parse(read_fixture("plaid/transactions_sync_example.json"));
  INFO(result.error);
  REQUIRE(result.ok);
  const sync_page& page = result.page;
  CHECK_FALSE(page.has_more);
  CHECK(page.next_cursor.starts_with("tVUUL15lYQN5rBnfDIc1I8xudpGdIlw9"));

  REQUIRE(page.added.size() == 1);
  const transaction& walmart = page.added[0];
  CHECK(walmart.transaction_id == "lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDje");
  CHECK(walmart.account_id == "BxBXxLj1m4HMXBm9WZZmCWVbPjX16EHwv99vp");
  CHECK(walmart.amount_minor == -7210);  // a purchase of 72.10: outflow, so negative here
  CHECK(walmart.currency == "USD");
  CHECK(walmart.official_currency);
  CHECK(walmart.date == "2023-09-24");
  CHECK(walmart.authorized_date == "2023-09-22");
  CHECK(walmart.name == "PURCHASE WM SUPERCENTER #1700");
  CHECK(walmart.merchant_name == "Walmart");
  CHECK(walmart.payment_channel == "in store");
  CHECK(walmart.category_primary == "GENERAL_MERCHANDISE");
  CHECK(walmart.category_detailed == "GENERAL_MERCHANDISE_SUPERSTORES");
  CHECK_FALSE(walmart.pending);
  CHECK(walmart.pending_transaction_id == "no86Eox18VHMvaOVL7gPUM9ap3aR1LsAVZ5nc");

  REQUIRE(page.modified.size() == 1);
  CHECK(page.modified[0].amount_minor == -2834);
  CHECK(page.modified[0].pending);
  CHECK_FALSE(page.modified[0].pending_transaction_id);

  REQUIRE(page.removed.size() == 1);
  CHECK(page.removed[0].transaction_id == "CmdQTNgems8BT1B7ibkoUXVPyAeehT3Tmzk0l");

  REQUIRE(page.accounts.size() == 1);
  CHECK(page.accounts[0].current_minor == 11094);
  CHECK(page.accounts[0].available_minor == 11094);
  CHECK_FALSE(page.accounts[0].limit_minor);
  CHECK(page.accounts[0].type == "depository");
  CHECK(page.accounts[0].mask == "0000");
}

TEST_CASE("amounts in JPY, BHD and an unofficial currency are exact, inflow positive", "[plaid][sync_page]") {
  const auto jpy = parse(page_with(transaction_with("-1500", "\"JPY\"", "null")));
  REQUIRE(jpy.ok);
  CHECK(jpy.page.added[0].amount_minor == 1500);  // a refund of 1,500 yen: inflow

  const auto bhd = parse(page_with(transaction_with("12.345", "\"BHD\"", "null")));
  REQUIRE(bhd.ok);
  CHECK(bhd.page.added[0].amount_minor == -12345);

  const auto btc = parse(page_with(transaction_with("0.00012345", "null", "\"BTC\"")));
  REQUIRE(btc.ok);
  CHECK(btc.page.added[0].amount_minor == -12345);
  CHECK(btc.page.added[0].currency == "BTC");
  CHECK_FALSE(btc.page.added[0].official_currency);
}

TEST_CASE("an amount more precise than its currency fails the page with the path", "[plaid][sync_page]") {
  const auto result = parse(page_with(transaction_with("1.5", "\"JPY\"", "null")));
  CHECK_FALSE(result.ok);
  CHECK_THAT(result.error, Catch::Contains("added[0].amount") && Catch::Contains("JPY"));
  CHECK(result.page.added.empty());
}

TEST_CASE("unknown currencies and missing currencies are refused", "[plaid][sync_page]") {
  CHECK_THAT(parse(page_with(transaction_with("1", "\"XYZ\"", "null"))).error,
             Catch::Contains("unknown currency 'XYZ'"));
  CHECK_THAT(parse(page_with(transaction_with("1", "null", "null"))).error,
             Catch::Contains("neither iso_currency_code nor unofficial_currency_code"));
}

TEST_CASE("unknown fields and new enum values are tolerated", "[plaid][sync_page]") {
  std::string transaction = transaction_with("3.5", "\"EUR\"", "null");
  transaction.insert(1, R"("brand_new_field":{"nested":[1,2,{"x":null}]},"payment_channel":"teleportation",)");
  const auto result = parse(R"({"request_id":"r","added":[)" + transaction +
                            R"(],"modified":[],"removed":[],"next_cursor":"c","has_more":true,"future":1})");
  INFO(result.error);
  REQUIRE(result.ok);
  CHECK(result.page.added[0].payment_channel == "teleportation");
  CHECK(result.page.has_more);
}

TEST_CASE("malformed, truncated or incomplete pages are errors, never partial pages", "[plaid][sync_page]") {
  const std::string good = page_with(transaction_with("1", "\"USD\"", "null"));
  REQUIRE(parse(good).ok);
  for (std::size_t cut : {std::size_t{1}, good.size() / 3, good.size() / 2, good.size() - 1}) {
    INFO("cut at " << cut);
    const auto result = parse(good.substr(0, cut));
    CHECK_FALSE(result.ok);
    CHECK(result.page.added.empty());
  }
  CHECK_THAT(parse(R"({"added":[],"modified":[],"removed":[],"has_more":false})").error, Catch::Contains("next_cursor"));
  CHECK_THAT(parse(R"({"added":[],"modified":[],"removed":[],"next_cursor":"","has_more":true})").error,
             Catch::Contains("empty while has_more"));
  CHECK_THAT(parse(R"({"added":{},"next_cursor":"c","has_more":false})").error, Catch::Contains("expected an array"));
  CHECK_THAT(parse(page_with(R"({"transaction_id":"t1","account_id":"a1","amount":"1.00","iso_currency_code":"USD","date":"2026-01-01","pending":false})")).error,
             Catch::Contains("expected a number"));
  CHECK_THAT(parse(page_with(R"({"transaction_id":"t1","account_id":"a1","amount":1,"iso_currency_code":"USD","date":"2026-02-30","pending":false})")).error,
             Catch::Contains("not a YYYY-MM-DD date"));
  CHECK_THAT(parse(page_with(R"({"account_id":"a1","amount":1,"iso_currency_code":"USD","date":"2026-01-01","pending":false})")).error,
             Catch::Contains("transaction_id missing"));
  CHECK_FALSE(parse("not json at all").ok);
  CHECK_FALSE(parse("").ok);
}

TEST_CASE("descriptive text is cut at a character boundary; oversized ids are refused", "[plaid][sync_page]") {
  std::string long_name;
  while (long_name.size() < transaction_name_bytes_max + 10) long_name += "é";
  std::string transaction = transaction_with("1", "\"USD\"", "null");
  transaction.replace(transaction.find("\"Coffee\""), 8, "\"" + long_name + "\"");
  const auto result = parse(page_with(transaction));
  REQUIRE(result.ok);
  CHECK(result.page.added[0].name.size() <= transaction_name_bytes_max);
  CHECK(result.page.added[0].name.size() % 2 == 0);  // whole two-byte characters only

  std::string long_id = transaction_with("1", "\"USD\"", "null");
  long_id.replace(long_id.find("\"t1\""), 4, "\"" + std::string(plaid_id_bytes_max + 1, 'x') + "\"");
  CHECK_THAT(parse(page_with(long_id)).error, Catch::Contains("transaction_id") && Catch::Contains("longer than"));
}

TEST_CASE("calendar dates are checked for real", "[plaid][sync_page]") {
  CHECK(is_calendar_date("2024-02-29"));
  CHECK_FALSE(is_calendar_date("2023-02-29"));
  CHECK(is_calendar_date("2000-02-29"));
  CHECK_FALSE(is_calendar_date("1900-02-29"));
  CHECK_FALSE(is_calendar_date("2026-13-01"));
  CHECK_FALSE(is_calendar_date("2026-1-01"));
  CHECK_FALSE(is_calendar_date("2026-01-00"));
}

TEST_CASE("an error names the exact place of the bad value: array, element index and field", "[plaid][sync_page]") {
  const std::string good = transaction_with("1.50", "\"USD\"", "null");
  const std::string bad_pending =
      R"({"transaction_id":"t2","account_id":"a1","amount":1,"iso_currency_code":"USD","date":"2026-01-01","pending":"no"})";
  CHECK(parse(R"({"added":[],"modified":[)" + good + "," + bad_pending +
              R"(],"removed":[],"next_cursor":"c1","has_more":false})")
            .error == "modified[1].pending: expected true or false");

  const std::string account_with_text_balance =
      R"({"account_id":"a1","name":"Checking","type":"depository","balances":{"current":"12.00","iso_currency_code":"USD"}})";
  CHECK(parse(R"({"accounts":[)" + account_with_text_balance +
              R"(],"added":[],"modified":[],"removed":[],"next_cursor":"c1","has_more":false})")
            .error == "accounts[0].balances.current: expected a number");

  CHECK(parse(R"({"added":[],"modified":[],"removed":[{"account_id":"a1"}],"next_cursor":"c1","has_more":false})")
            .error == "removed[0]: transaction_id missing");
  CHECK(parse(R"({"added":[],"modified":[],"removed":[],"next_cursor":7,"has_more":false})").error ==
        "next_cursor: expected a string");
}

TEST_CASE("text holding U+0000 fails the page by name instead of failing the database apply", "[plaid][sync_page]") {
  std::string in_name = transaction_with("1", "\"USD\"", "null");
  in_name.replace(in_name.find("\"Coffee\""), 8, R"("Cof\u0000fee")");
  CHECK(parse(page_with(in_name)).error == "added[0].name: contains U+0000, which text columns cannot hold");

  std::string in_id = transaction_with("1", "\"USD\"", "null");
  in_id.replace(in_id.find("\"t1\""), 4, R"("t\u00001")");
  CHECK(parse(page_with(in_id)).error == "added[0].transaction_id: contains U+0000, which text columns cannot hold");

  CHECK(parse(R"({"added":[],"modified":[],"removed":[],"next_cursor":"c\u0000","has_more":false})").error ==
        "next_cursor: contains U+0000, which text columns cannot hold");
  // Other escapes still decode to their characters.
  std::string escaped = transaction_with("1", "\"USD\"", "null");
  escaped.replace(escaped.find("\"Coffee\""), 8, R"("Caf\u00e9\tBar")");
  const auto result = parse(page_with(escaped));
  REQUIRE(result.ok);
  CHECK(result.page.added[0].name == "Caf\xC3\xA9\tBar");
}

TEST_CASE("a body parsed in place, with garbage past its end, reads exactly as from a padded copy",
          "[plaid][sync_page]") {
  const std::string text = read_fixture("plaid/transactions_sync_example.json");
  std::string in_place = text + std::string(simdjson::SIMDJSON_PADDING + 8, '"');
  in_place.resize(text.size());  // the capacity (and the garbage in it) stays
  REQUIRE(in_place.capacity() >= in_place.size() + simdjson::SIMDJSON_PADDING);
  simdjson::ondemand::parser parser;
  const page_result copied = parse_sync_page(parser, text, currencies);
  const page_result direct = parse_sync_page(parser, in_place, currencies, in_place.capacity());
  REQUIRE(copied.ok);
  REQUIRE(direct.ok);
  REQUIRE(direct.page.added.size() == copied.page.added.size());
  for (std::size_t i = 0; i < copied.page.added.size(); ++i) {
    CHECK(direct.page.added[i].transaction_id == copied.page.added[i].transaction_id);
    CHECK(direct.page.added[i].amount_minor == copied.page.added[i].amount_minor);
    CHECK(direct.page.added[i].name == copied.page.added[i].name);
  }
  CHECK(direct.page.next_cursor == copied.page.next_cursor);

  // Too little room past the end is never read: the parser copies instead.
  const page_result short_room = parse_sync_page(parser, text, currencies, text.size() + 1);
  CHECK(short_room.ok);
  CHECK(short_room.page.next_cursor == copied.page.next_cursor);
}
