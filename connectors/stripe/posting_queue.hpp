#pragma once
// The Stripe inbox read as the posting queue (migration 0035): which tenants have events waiting,
// a tenant's claim of its oldest waiting events, their failures with backoff and dead-lettering,
// and what operators see and retry. SQL only; connectors/stripe/poster.cpp decides what happens.
//
// Every call but ready_tenants runs in a transaction scoped to one tenant (db/tenant_scope.hpp).

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"

namespace bankworker::stripe {

// Attempts an event's posting gets before it is dead-lettered (state failed), and the backoff
// between them: 10 s doubling per attempt, at most an hour (about 4 hours in all).
inline constexpr std::int32_t posting_attempts_max = 8;

// Up to `limit` tenants with events waiting for a poster, in tenant order after `after` (none:
// from the first). Needs no tenant scope: it returns ids only (a SECURITY DEFINER function).
std::vector<core::uuid> ready_tenants(pqxx::transaction_base& tx, const std::optional<core::uuid>& after,
                                      std::uint32_t limit);

// Takes the posting lock of the transaction's tenant's lane (held until the transaction ends);
// false when another poster, in this process or another, holds it. One poster per lane at a time
// keeps the postings of each money object in arrival order (a money object's events share a lane:
// inbox.hpp, posting_lane_of).
bool try_lock_posting_lane(pqxx::work& tx, std::uint8_t lane);

struct waiting_event {
  std::string event_id;
  std::string body;
  std::int32_t attempts = 0;
};
// Locks and returns up to `limit` of the tenant's events in `lane` waiting for a poster (state
// received, due), oldest first; rows another transaction holds are skipped.
std::vector<waiting_event> claim_waiting_events(pqxx::work& tx, std::uint8_t lane, std::uint32_t limit);
// The same for one event: nothing when it is not waiting (posted meanwhile) or locked.
std::optional<waiting_event> claim_waiting_event(pqxx::work& tx, std::string_view event_id);

// A posting that failed: `error` says why (no secret). `final`: no retry can help (the event
// needs an operator): dead-letter it now. Otherwise it waits its backoff, or is dead-lettered when
// its attempts ran out.
struct posting_failure {
  std::string event_id;
  std::string error;
  bool final = false;
};
// Records the failures; returns how many of them were dead-lettered.
std::size_t record_posting_failures(pqxx::work& tx, std::span<const posting_failure> failures);

// What `bankworker stripe events list` shows of one event: never its body.
struct event_summary {
  std::string event_id;
  std::string type;
  std::string state;
  std::int32_t attempts = 0;
  std::string received_at;                  // ISO 8601 UTC
  std::optional<std::string> available_at;  // when a retry is due
  std::optional<std::string> last_error;
  // Posted on its presentment side only (migration 0043): since when, and the legs (ch_…:gross)
  // whose balance transaction is awaited.
  std::optional<std::string> settlement_awaited_since;
  std::vector<std::string> settlement_awaited;
};
// The tenant's events, newest first, at most `limit`; only failed (dead-lettered) ones, only
// those not yet posted (received or fetching), or only those awaiting settlement, when asked.
enum class event_filter { all, failed, unposted, awaiting_settlement };
std::vector<event_summary> list_events(pqxx::transaction_base& tx, event_filter filter, std::uint32_t limit);
// Sets a failed event back to received with its attempts cleared; false when the tenant has no
// failed event with this id.
bool retry_failed_event(pqxx::work& tx, std::string_view event_id);

}  // namespace bankworker::stripe
