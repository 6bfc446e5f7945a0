// Reading the currency table (db/currencies.hpp).

#include "db/currencies.hpp"

#include <string>
#include <vector>

namespace bankworker::db {

namespace {

constexpr const char* currencies_sql = "SELECT code, exponent, iso FROM bankworker.currencies";

}  // namespace

core::currency_table load_currencies(pqxx::transaction_base& tx) {
  std::vector<core::currency> currencies;
  for (const auto& row : tx.exec(currencies_sql)) {
    currencies.push_back({row[0].as<std::string>(), row[1].as<int>(), row[2].as<bool>()});
  }
  return core::currency_table(std::move(currencies));
}

}  // namespace bankworker::db
