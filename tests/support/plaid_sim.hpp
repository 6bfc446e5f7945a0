#pragma once
// The Plaid simulator (tests/sim/plaid) as tests use it: started on a free port, spoken to over
// its control API, and its truth turned into the rows bankworker must hold (plaid_truth.hpp).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "tests/support/child.hpp"
#include "tests/support/plaid_truth.hpp"

namespace bankworker::test {

inline constexpr const char* sim_client_id = "bankworker-sim-client";
inline constexpr const char* sim_secret = "bankworker-sim-secret";

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

}  // namespace bankworker::test
