#pragma once
// Postings awaiting settlement (issue #16, migration 0043): the marks on Stripe event rows that say
// a leg was posted on its presentment side only, because its balance transaction was not known
// (not in the webhook body, and no API key to fetch it). Nothing is guessed meanwhile: the ledger
// holds the presentment entry (ch_…:gross in KWD) and neither the conversion nor the fee.
//
// Every transaction that posts Stripe plans (the posters, the stripe.post batches) collects them
// here and writes the marks with its entries, so a mark and the entries it describes commit or
// roll back together:
//   - an event posted with legs still unsettled is marked with those legs (ch_…:gross), from the
//     first such posting's time on; a leg the ledger has settled already (its fee or conversion
//     entry exists: another event carried its balance transaction) is not awaited;
//   - a leg a plan settles is cleared from every event awaiting it, and an event with nothing left
//     to await loses its mark.
// The inbox applies the first rule itself to the events it posts as it stores them (migration 0057,
// bankworker.stripe_inbox_post: the same fee and conversion keys probed); it never posts an event
// that settles a leg, so the second stays here.
// Completion: a later event carrying the balance transaction settles the leg as it posts; the
// recovery job (a key configured) hands awaiting events back to stripe.post, which fetches what
// they miss. Both post under the same keys, so nothing is ever posted twice.
//
// Limit of the rule above: a leg settled by another event with no fee in its own currency leaves
// no entry to find, so an event posted later without that balance transaction is marked until a
// stripe.post with a key fetches it (the mark then clears, posting nothing).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "connectors/stripe/posting.hpp"
#include "core/uuid.hpp"

namespace bankworker::stripe {

class settlement_marks {
 public:
  // A posted plan's legs (settlement_summary_of) for event `event_id`.
  void add(const std::string& event_id, const settlement_summary& summary);
  bool empty() const noexcept { return awaiting_.empty() && settled_.empty(); }
  // Writes the events' new states (event_ids[i] becomes states[i]) and the marks, in the posting
  // transaction after its entries are posted: one update per event row.
  void write(pqxx::work& tx, std::span<const std::string> event_ids, std::span<const std::string> states) const;

 private:
  std::vector<std::pair<std::string, std::vector<awaited_leg>>> awaiting_;  // events with unsettled legs
  std::vector<std::string> settled_;                                        // legs settled, any event
};

// What an operator and the recovery job see of an event awaiting settlement.
struct awaiting_event {
  std::string event_id;
  std::string since;              // ISO 8601 UTC
  std::vector<std::string> legs;  // ch_…:gross, …
};
// The transaction's tenant's events awaiting settlement, oldest first, at most `limit`.
std::vector<awaiting_event> awaiting_settlement_events(pqxx::transaction_base& tx, std::uint32_t limit);

// The leg keys of `array_to_string(settlement_awaited, ',')`, in order.
std::vector<std::string> split_leg_keys(std::string_view text);

// Hands up to `limit` of the transaction's tenant's awaiting events, oldest first, back to
// stripe.post (one waiting job per event: a unique key), which fetches what they miss when a key
// is configured. Returns how many jobs were enqueued. The recovery job calls it.
inline constexpr std::uint32_t settlement_completions_max = 100;
std::size_t enqueue_settlement_completions(pqxx::work& tx, const core::uuid& tenant, std::uint32_t limit);

// The SQL of the gauges (events awaiting settlement, oldest one's age), read by the runtime's
// database gauges. The count stops at settlement_gauge_count_max, so that a refresh costs the same
// however many events wait (migration 0050); the oldest one's age is exact.
inline constexpr std::int64_t settlement_gauge_count_max = 10000;
inline constexpr const char* settlement_gauges_sql = "SELECT events, oldest_s FROM bankworker.stripe_settlement_gauges()";

}  // namespace bankworker::stripe
