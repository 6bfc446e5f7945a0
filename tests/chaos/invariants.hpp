#pragma once
// The end-of-run checks of the chaos run against the simulators' ground truth. The checker is
// test equipment: it reads every tenant's rows as the cluster's superuser (bypassing RLS), which
// nothing in bankworker ever does.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bankworker::chaos {

// What the run did that the database must now reflect.
struct run_record {
  std::string admin_url;
  std::string plaid_url;
  std::string stripe_url;
  std::string stripe_api_key;
  std::map<std::string, std::string> cli_env;  // for `bankworker audit verify`
  std::vector<std::string> tenants;
  std::vector<std::string> accounts;  // the Stripe Connect account of each tenant, same order
  // Every Stripe event triggered: id → (tenant index, its JSON as delivered).
  struct stripe_event {
    std::size_t tenant = 0;
    std::string body;
  };
  std::map<std::string, stripe_event> events;
  std::size_t links_requested = 0;
  // Connections whose revocation the run asked for.
  std::vector<std::string> revocations_requested;
  // Workers that exited by themselves, other than at start-up while PostgreSQL was away.
  std::vector<std::string> unexpected_exits;
  // Exit codes of the workers' final SIGTERM drain (-1: killed, 999: did not exit in time).
  std::vector<int> drain_exit_codes;
};

struct invariant_result {
  std::string name;
  bool passed = true;
  std::string detail;  // what was checked (counts), or the first problems found
};

std::vector<invariant_result> check_invariants(const run_record& record);

}  // namespace bankworker::chaos
