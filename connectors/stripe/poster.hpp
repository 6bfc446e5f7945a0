#pragma once
// The posters: Stripe events go from the inbox into the ledger without a job row each (issue 21).
//
// The inbox is the posting queue (migration 0035), for what the inbox could not post as it stored
// it (intake.hpp: a lane a poster held or where an event waited, an event that needs the API, a
// failed plan, a leg to settle, and every later event of its lane in that batch). A poster walks the tenants that have events
// waiting, round robin (so one tenant's backlog cannot starve another's), and for each takes the
// posting lock of one of the tenant's lanes (migration 0046: the events of one money object share a
// lane), claims up to batch_max of the lane's oldest waiting events (FOR UPDATE SKIP LOCKED), plans each with the posting rules, posts every entry in one statement batch and marks
// every event, all in ONE transaction: a crash anywhere loses and doubles nothing, because the
// entries and the marks commit together or not at all. One poster per lane at a time (the lock)
// keeps each money object's postings in arrival order, and a busy tenant's lanes post side by side.
//
// What an event becomes:
//   posted / ignored   as the posting rules say (posting.hpp); posted with a leg whose balance
//                      transaction is unknown (no API), it is also marked awaiting settlement
//                      (settlement_marks.hpp) until a later event brings it;
//   fetching           its posting needs the Stripe API (a thin event, a leg to fetch) and an API is
//                      configured: it is handed to a stripe.post job in the same transaction, since
//                      a network call is worth a job's lease, backoff and call log;
//   received again     its posting failed (a plan error, an entry that conflicts): attempts + 1,
//                      last_error, retried after a backoff;
//   failed             dead-lettered: attempts ran out, or it needs an operator (a thin event with
//                      no API configured). `bankworker stripe events retry` gives it back.
// A batch that cannot commit as a whole (an entry conflict, say) is rolled back and its events are
// posted one transaction each, so the failure lands on the event it belongs to.
//
// Posters wake when the inbox commits new events (wake(tenants)) and go straight to those tenants;
// a poster never takes a lane another poster of this process is posting (the lock would turn it
// away after a wasted transaction), it leaves it to that poster, which looks again when it is done.
// A full round over the database's list of waiting tenants runs every idle_poll (and at once when
// the last one was busy): it finds retries that came due and events other processes stored. The
// list is a skip scan that also steps over the index entries of events posted since the last
// vacuum, so a round per commit (what the posters did first) cost a scan per commit.

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/known_charts.hpp"
#include "core/currency.hpp"
#include "core/uuid.hpp"
#include "db/pool.hpp"
#include "service/log.hpp"
#include "service/metrics.hpp"

namespace bankworker::stripe {

struct poster_settings {
  std::size_t threads = 2;          // posters in this process (0: only post_round, for tests)
  std::uint32_t batch_max = 256;    // events per transaction
  std::uint32_t tenants_per_round = 64;
  std::chrono::milliseconds idle_poll{500};
  // A lane whose last batch was not full waits this long before its next one. Most of a small
  // batch's cost is the batch's, not its events' (webhook_load: 142 us of PostgreSQL per event in
  // batches of 49, 109 us in batches of 250), so under load the lanes post fuller batches; an
  // event still posts within about this long of its commit.
  std::chrono::milliseconds batch_rest{100};
  bool api_configured = false;  // events whose posting needs the Stripe API go to stripe.post jobs
};

// What one round did, by outcome.
struct poster_counts {
  std::uint64_t posted = 0;
  std::uint64_t ignored = 0;
  std::uint64_t handed_off = 0;
  std::uint64_t retried = 0;
  std::uint64_t dead = 0;
  std::uint64_t handled() const noexcept { return posted + ignored + handed_off + retried + dead; }
};

class poster {
 public:
  // Everything passed by reference outlives the poster. `metrics` may be null.
  poster(db::pool& connections, const core::currency_table& currencies, service::logger& log,
         service::metrics_registry* metrics, poster_settings settings);
  poster(const poster&) = delete;
  poster& operator=(const poster&) = delete;
  ~poster();

  // Something may be waiting anywhere: a poster makes a full round now.
  void wake();
  // These tenants' lanes got new events (inbox::on_committed): a poster posts them now.
  void wake(std::span<const tenant_lane> lanes);
  // Lets each poster finish the batch in hand, then joins them. Idempotent.
  void stop();

  // One round over the tenants with waiting events, on the caller's thread. Throws what the
  // database throws when it is unreachable.
  poster_counts post_round();

  // Adds `counts` to bankworker_stripe_postings_total: the posters' own, and the events the inbox
  // posted as it stored them (intake.hpp). Thread-safe.
  void count(const poster_counts& counts);

 private:
  void run();
  // One round; `busy`: more is waiting at once (a full batch, more tenants than one round takes).
  poster_counts round(bool& busy);
  // One batch of one lane of one tenant (posting_queue.hpp); `more`: a full batch was taken.
  poster_counts post_lane(const tenant_lane& at, bool& more);
  // Posts the lane taken from woken_lanes_ (one batch), then gives it back: to woken_lanes_ when
  // more is waiting in it, and out of posting_now_.
  poster_counts post_woken(const tenant_lane& at);
  // Under mutex_: the first woken lane no poster is posting now, moved into posting_now_. One at
  // a time, so that the posters share a busy tenant's lanes rather than one taking them all.
  std::optional<tenant_lane> take_woken_locked();
  // Under mutex_: whether `at` rests now (batch_rest), and when the first woken lane's rest ends.
  bool resting_locked(const tenant_lane& at, std::chrono::steady_clock::time_point now) const;
  std::chrono::steady_clock::time_point rest_end_locked() const;
  // The events of a batch that rolled back, one transaction each; stops when another poster
  // takes the lane.
  poster_counts post_alone(const tenant_lane& at, std::span<const std::string> event_ids);

  db::pool& connections_;
  const core::currency_table& currencies_;
  service::logger& log_;
  const poster_settings settings_;
  // bankworker_stripe_postings_total by outcome (posted, ignored, handed_off, retried, dead), in
  // the registry's storage; null without metrics.
  std::array<service::metrics_registry::counter*, 5> counters_{};
  known_charts charts_;
  std::mutex mutex_;  // guards woken_, woken_lanes_, posting_now_, resting_, stopping_, cursor_
  std::condition_variable wake_;
  bool woken_ = false;                    // a full round is asked for
  std::vector<tenant_lane> woken_lanes_;  // lanes of tenants with new events, each once
  std::vector<tenant_lane> posting_now_;  // lanes a poster of this process is posting
  // Lanes resting after a batch that was not full, until when (batch_rest).
  std::vector<std::pair<tenant_lane, std::chrono::steady_clock::time_point>> resting_;
  bool stopping_ = false;
  std::optional<core::uuid> cursor_;  // the round robin's place among the tenants
  std::vector<std::thread> threads_;
};

}  // namespace bankworker::stripe
