#pragma once
// A tenant's books as one document: accounts with balances, the trial balance, journal entries
// with their lines, bank transactions, and each payout's reconciliation (status, matched bank
// row). Amounts appear twice: as integer minor units (exact,
// for machines) and as decimal text placed by the currency's exponent (for people) — never as a
// JSON float. Rows are read through a cursor in batches, so memory stays flat however large the
// ledger is.

#include <ostream>
#include <string>
#include <string_view>

#include <pqxx/pqxx>

namespace bankworker::ledger {

enum class export_format { json, csv };

inline constexpr std::size_t export_batch_rows = 5'000;

// "12.34" for 1234 with exponent 2, "-0.005" for -5 with exponent 3, "1500" for exponent 0.
std::string decimal_text(std::int64_t minor, int exponent);

// Writes the export of the transaction's tenant to `out`. Throws std::runtime_error when the
// tenant does not exist (the scope sees no tenant row).
void export_books(pqxx::work& tx, export_format format, std::ostream& out);

}  // namespace bankworker::ledger
