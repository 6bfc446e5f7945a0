// Reading the currency table (db/currencies.hpp).

#include "db/currencies.hpp"

#include <string>
#include <vector>

#include "core/json_text.hpp"
#include "db/audit.hpp"

namespace bankworker::db {

namespace {

constexpr const char* currencies_sql = "SELECT code, exponent, iso FROM bankworker.currencies";
constexpr const char* declare_sql = "SELECT declared, syncs_requested FROM bankworker.declare_currency($1, $2)";

}  // namespace

core::currency_table load_currencies(pqxx::transaction_base& tx) {
  std::vector<core::currency> currencies;
  for (const auto& row : tx.exec(currencies_sql)) {
    currencies.push_back({row[0].as<std::string>(), row[1].as<int>(), row[2].as<bool>()});
  }
  return core::currency_table(std::move(currencies));
}

currency_declared declare_currency(pool& connections, const key_store& keys, std::string_view code, int exponent,
                                   std::string_view actor) {
  pool::lease lease = connections.checkout();
  pqxx::work tx(lease.connection(), "bankworker_declare_currency");
  const pqxx::row row = tx.exec_params1(declare_sql, std::string(code), exponent);
  currency_declared out{row[0].as<bool>(), row[1].as<std::int64_t>()};
  if (out.declared) {
    std::string details = "{\"code\":";
    core::append_json_string(code, details);
    details += ",\"exponent\":" + std::to_string(exponent) + "}";
    const std::string subject = "currency:" + std::string(code);
    append_audit_every_tenant(tx, keys, {.tenant = {}, .actor = actor, .action = "currency.declared",
                                         .subject = subject, .details = std::move(details)});
  }
  tx.commit();
  return out;
}

}  // namespace bankworker::db
