#pragma once
// The Plaid simulator (tests/sim/plaid) as tests use it: started on a free port, spoken to over
// its control API, and its truth turned into the rows bankworker must hold. Amounts are turned
// into minor units here, by hand, with each currency's exponent and the sign flipped (Plaid's
// positive is money out), independently of the normaliser under test.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "tests/support/child.hpp"

namespace bankworker::test {

inline constexpr const char* sim_client_id = "bankworker-sim-client";
inline constexpr const char* sim_secret = "bankworker-sim-secret";

struct expected_row {
  std::string transaction_id;
  std::int64_t amount_minor = 0;
  std::string currency;
  bool pending = false;
  std::optional<std::string> pending_transaction_id;
  friend bool operator==(const expected_row&, const expected_row&) = default;
  friend bool operator<(const expected_row& a, const expected_row& b) { return a.transaction_id < b.transaction_id; }
};

class plaid_simulator {
 public:
  // plaid_sim --port 0 --transactions 40, then `extra`.
  explicit plaid_simulator(const std::vector<std::string>& extra = {});

  // A control or API call; fails the test unless it answers 200.
  std::string post(const std::string& path, const std::string& body) const;
  // A public token for a new item, as Link would hand it to the app.
  std::string public_token() const;
  std::string access_token_of(const std::string& item_id) const;
  // The item's live transactions as bankworker must store them, sorted by id.
  std::vector<expected_row> truth(const std::string& access_token) const;
  // How many calls of `endpoint` the simulator received for the item.
  std::size_t calls(const std::string& endpoint, const std::string& item_id) const;

  child_process process;
  std::string url;
};

// The connection's live (not removed) transactions in the database, sorted by id.
std::vector<expected_row> stored_rows(pqxx::connection& admin, const std::string& connection_id);

}  // namespace bankworker::test
