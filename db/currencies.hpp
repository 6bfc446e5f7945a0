#pragma once
// The currency table (bankworker.currencies: ISO 4217 codes and the unofficial ones providers
// send, each with its exponent), read once at start-up for pure code (core/currency.hpp).

#include <pqxx/pqxx>

#include "core/currency.hpp"

namespace bankworker::db {

core::currency_table load_currencies(pqxx::transaction_base& tx);

}  // namespace bankworker::db
