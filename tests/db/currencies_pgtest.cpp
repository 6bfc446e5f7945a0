// Migration 0030: every unofficial currency code Plaid's spec lists is declared, with an exponent
// a bigint can hold realistic amounts in; the worker reads the table, the app cannot quarantine.
#include <catch2/catch.hpp>

#include <simdjson.h>

#include <pqxx/pqxx>

#include "tests/support/fixture.hpp"
#include "tests/support/scratch_database.hpp"

using bankworker::test::read_fixture;
using bankworker::test::scratch_database;

TEST_CASE("every code of Plaid's UnofficialCurrencyCodeList is declared as unofficial", "[pg][currencies]") {
  scratch_database database;
  pqxx::connection worker(database.runtime_url());
  pqxx::work tx(worker);
  simdjson::dom::parser parser;
  const std::string codes = read_fixture("plaid/unofficial_currency_codes.json");
  simdjson::dom::object listed = parser.parse(codes).get_object();
  std::size_t count = 0;
  for (auto [code, description] : listed) {
    INFO(code);
    const pqxx::result row =
        tx.exec_params("SELECT exponent, iso FROM bankworker.currencies WHERE code = $1", std::string(code));
    REQUIRE(row.size() == 1);
    CHECK_FALSE(row[0][1].as<bool>());
    // A million whole units still fit in a bigint of minor units (not so with wei's 18 decimals).
    CHECK(row[0][0].as<int>() <= 12);
    ++count;
  }
  CHECK(count == 23);
  CHECK(tx.exec1("SELECT exponent FROM bankworker.currencies WHERE code = 'BTC'")[0].as<int>() == 8);
  CHECK(tx.exec1("SELECT exponent FROM bankworker.currencies WHERE code = 'ETH'")[0].as<int>() == 9);
}
