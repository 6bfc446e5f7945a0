#pragma once
// The currency table (bankworker.currencies: ISO 4217 codes and the unofficial ones providers
// send, each with its exponent), read once at start-up for pure code (core/currency.hpp), and
// declaring a currency the table lacks (`bankworker currencies add`, issue #16).

#include <cstdint>
#include <string_view>

#include <pqxx/pqxx>

#include "core/currency.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"

namespace bankworker::db {

core::currency_table load_currencies(pqxx::transaction_base& tx);

struct currency_declared {
  bool declared = false;             // false: it was declared already with this exponent (a no-op)
  std::int64_t syncs_requested = 0;  // connections whose quarantined rows wait for it: each syncs now
};

// Declares an unofficial currency (bankworker.declare_currency, migration 0038) and, when it is
// new, audits it in every tenant's chain in the same transaction (every tenant's rows may now hold
// it). Running processes read the table at start, so a worker's next apply that meets a
// quarantined row reads it again. Throws pqxx::sql_error with the database's reason: a malformed
// code, an exponent outside 0..18, or a code declared with another exponent.
currency_declared declare_currency(pool& connections, const key_store& keys, std::string_view code, int exponent,
                                   std::string_view actor);

}  // namespace bankworker::db
