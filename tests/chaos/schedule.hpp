#pragma once
// The chaos run's schedule: every action and when it happens, drawn up front from the seed, so
// the same seed gives the same schedule (which worker is killed when, which tenant pays what,
// when PostgreSQL restarts). Targets are drawn as numbers and resolved when the action runs
// (`pick % connections that exist then`), so what they hit depends on timing; the plan does not.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bankworker::chaos {

enum class action_kind {
  link,              // a new Plaid item for a tenant (`plaid link`)
  mutate,            // a change at the bank: pending, posted, modified, removed, a batch
  sync,              // `connections sync`
  plaid_webhook,     // SYNC_UPDATES_AVAILABLE, signed, to a worker
  plaid_fault,       // one injected Plaid error (5xx, 429, mutation, truncated body, …)
  plaid_slow,        // Plaid slow or failing for a while
  stripe_event,      // a payment, refund, payout or dispute, into the webhook storm
  stripe_api_fault,  // the Stripe API failing for a few calls
  revoke,            // `connections revoke`
  rotate_key,        // `keys rotate --tenant`
  rewrap,            // `keys rewrap --tenant` (the same tenant, a moment later)
  kill_worker,       // kill -9 a worker; it restarts after `pause`
  restart_postgres,  // stop PostgreSQL, wait `pause`, start it
};
inline constexpr std::size_t action_kinds_count = 13;

std::string_view name_of(action_kind kind);

struct action {
  std::chrono::milliseconds at{0};  // from the start of the chaos phase
  action_kind kind = action_kind::mutate;
  std::uint64_t pick = 0;          // target and variant, resolved when it runs
  std::uint64_t detail = 0;        // a second independent draw (amount, fault, copies)
  std::chrono::milliseconds pause{0};  // kill_worker: until the restart; restart_postgres: down time
};

struct schedule_settings {
  std::uint64_t seed = 0;
  std::chrono::seconds duration{75};
  std::size_t tenants = 6;
};

// Sorted by time.
std::vector<action> make_schedule(const schedule_settings& settings);

// A short hash of the whole schedule, printed so two runs can be seen to share one.
std::uint64_t fingerprint(const std::vector<action>& schedule);

}  // namespace bankworker::chaos
