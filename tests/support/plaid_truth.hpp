#pragma once
// The Plaid simulator's ground truth turned into the rows bankworker must hold, and the rows it
// does hold, free of Catch so that test programs other than Catch suites (tests/chaos) use them
// too. Amounts are turned into minor units here, by hand, with each currency's exponent and the
// sign flipped (Plaid's positive is money out), independently of the normaliser under test.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

namespace bankworker::test {

struct expected_row {
  std::string transaction_id;
  std::int64_t amount_minor = 0;
  std::string currency;
  bool pending = false;
  std::optional<std::string> pending_transaction_id;
  friend bool operator==(const expected_row&, const expected_row&) = default;
  friend bool operator<(const expected_row& a, const expected_row& b) { return a.transaction_id < b.transaction_id; }
};

// The rows of a /sim/transactions/truth answer, sorted by id. Throws std::runtime_error on an
// amount or currency it cannot convert exactly.
std::vector<expected_row> parse_truth(std::string_view body);

// The connection's live (not removed) transactions in the database, sorted by id.
std::vector<expected_row> stored_rows(pqxx::connection& admin, const std::string& connection_id);

}  // namespace bankworker::test
