#pragma once
// Posting at intake (issue 21, migration 0057): the inbox's committer posts what it can as it
// stores it, and only the rest waits in the inbox for a poster (poster.hpp).
//
// The committer holds every event's body when it writes a batch, so for a batch of one tenant's
// events it plans each one with the posting rules (posting_step.hpp, the posters' own decision)
// and sends, with the events, the state each may take now (posted or ignored), the legs a posted
// one leaves awaiting settlement, and the entries and lines to post; one statement in autocommit
// (bankworker.stripe_inbox_post) stores them, posts them, and commits. It saves what a poster spent
// per event: the claim, reading the body back, and the second version of the row with its body
// that marking it posted wrote.
//
// Same outcome, same order as a poster:
//   - an event becomes posted or ignored now only if a poster would have made it that, from its
//     body alone: a plan that fails, a thin event, a leg the API is to fetch, an entry that fails
//     ledger::check_entry, or a leg it settles (whose marks on other events a poster clears) leaves
//     it received for the posters, and with it every later event of the batch in its lane;
//   - the function posts in a lane only when it holds the posters' lock of that lane and no event
//     waits there (received, due or not): otherwise the lane's events are stored received, so a
//     money object's events still post in arrival order;
//   - an entry posted before with other lines aborts the statement (SQLSTATE BWE01); the
//     committer then stores the batch without posting and the posters record the conflict on the
//     event it belongs to, as before.
// Counted with the posters' outcomes in bankworker_stripe_postings_total.

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/known_charts.hpp"
#include "connectors/stripe/poster.hpp"
#include "core/currency.hpp"
#include "core/uuid.hpp"
#include "db/sql_array.hpp"
#include "ledger/ledger.hpp"
#include "service/log.hpp"

namespace bankworker::stripe {

// A batch's postings, in the shapes bankworker.stripe_inbox_post takes: per event (in the batch's
// order) the state it may take now (NULL: received) and its awaited legs with their fee and
// conversion keys ('ch_1:gross,re_2:refund' / 'ch_1:fee,re_2:refund_fee' / 'ch_1:fx,re_2:refund_fx',
// NULL: none); per entry the event it belongs to, and the entries themselves.
struct intake_plan {
  db::array_text states, legs, fees, fxs;
  db::array_text entry_events;
  ledger::entry_arrays entries;
};

class intake_planner {
 public:
  // `currencies` and `log` outlive the planner. `api_configured`: events whose posting needs the
  // API are the posters' (they hand them to stripe.post jobs). `counted` receives what each
  // committed batch posted and ignored (the posters' metric).
  intake_planner(const core::currency_table& currencies, service::logger& log, bool api_configured,
                 std::function<void(const poster_counts&)> counted);

  // The postings of `events` (one tenant's, arrival order). Call on one thread at a time (the committer).
  intake_plan plan(std::span<const inbox_event* const> events) const;

  // Whether the tenant's chart of accounts is known to exist (the committer ensures it once, in a
  // transaction of its own, before the tenant's first posting batch).
  bool chart_known(const core::uuid& tenant) const { return charts_.contains(tenant); }
  void chart_ensured(const core::uuid& tenant) { charts_.add(tenant); }

  // A committed batch posted `posted` events and ignored `ignored`.
  void committed(std::uint64_t posted, std::uint64_t ignored) const;
  // A batch could not be stored posting (why: the server's error, no secret in it); the inbox
  // stores it without posting (or, if that fails too, event by event).
  void fell_back(std::string_view why) const;

 private:
  const core::currency_table& currencies_;
  service::logger& log_;
  const bool api_configured_;
  const std::function<void(const poster_counts&)> counted_;
  known_charts charts_;
};

}  // namespace bankworker::stripe
