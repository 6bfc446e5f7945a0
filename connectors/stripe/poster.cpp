#include "connectors/stripe/poster.hpp"

#include <algorithm>
#include <span>
#include <string>

#include <simdjson.h>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/posting_queue.hpp"
#include "connectors/stripe/posting_step.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "db/connection_problem.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"

namespace bankworker::stripe {

namespace {

// A batch's decisions and what they write, in the shapes the statements take.
struct batch_work {
  std::vector<posting_decision> decisions;  // one per event; entries below point into them
  std::vector<const ledger::entry*> entries;
  std::vector<std::string> marked_ids, marked_states;
  std::vector<posting_failure> failures;
  std::vector<std::string_view> hand_offs;
  settlement_marks marks;
  poster_counts counts;
};

batch_work plan_batch(std::span<const waiting_event> events, const core::currency_table& currencies,
                      bool api_configured) {
  thread_local simdjson::dom::parser parser;
  batch_work work;
  work.decisions.reserve(events.size());
  for (const waiting_event& event : events) {
    work.decisions.push_back(decide_posting(parser, event.event_id, event.body, currencies, api_configured));
  }
  for (std::size_t i = 0; i < events.size(); ++i) {
    posting_decision& d = work.decisions[i];
    const std::string& id = events[i].event_id;
    switch (d.what) {
      case posting_step::post:
        for (const ledger::entry& entry : d.entries) work.entries.push_back(&entry);
        work.marked_ids.push_back(id);
        work.marked_states.emplace_back("posted");
        work.marks.add(id, d.settlement);
        ++work.counts.posted;
        break;
      case posting_step::ignore:
        work.marked_ids.push_back(id);
        work.marked_states.emplace_back("ignored");
        ++work.counts.ignored;
        break;
      case posting_step::hand_off:
        work.marked_ids.push_back(id);
        work.marked_states.emplace_back("fetching");
        work.hand_offs.push_back(id);
        ++work.counts.handed_off;
        break;
      case posting_step::retry:
      case posting_step::dead:
        work.failures.push_back({id, std::move(d.error), d.what == posting_step::dead});
        break;
    }
  }
  return work;
}

// Writes a planned batch in the tenant's transaction: entries, marks (states and awaited
// settlements), failures, hand-offs.
void write_batch(pqxx::work& tx, const core::uuid& tenant, batch_work& work, bool ensure_chart) {
  if (!work.entries.empty()) {
    if (ensure_chart) ledger::ensure_chart(tx);
    ledger::post_entries(tx, work.entries);
  }
  work.marks.write(tx, work.marked_ids, work.marked_states);
  const std::size_t dead = record_posting_failures(tx, work.failures);
  work.counts.dead += dead;
  work.counts.retried += work.failures.size() - dead;
  if (!work.hand_offs.empty()) enqueue_stripe_posts(tx, tenant, work.hand_offs);
}

// The database is away or the commit's fate unknown: nothing to blame on an event.
bool is_outage(const std::exception& error) {
  return db::is_connection_problem(error) || dynamic_cast<const db::pool_timeout*>(&error) != nullptr ||
         dynamic_cast<const pqxx::in_doubt_error*>(&error) != nullptr;
}

// An entry that conflicts with one posted before, or one the rules built wrong: no retry can help.
bool is_final(const std::exception& error) {
  return dynamic_cast<const ledger::entry_conflict*>(&error) != nullptr ||
         dynamic_cast<const ledger::entry_invalid*>(&error) != nullptr;
}

poster_counts& operator+=(poster_counts& total, const poster_counts& more) {
  total.posted += more.posted;
  total.ignored += more.ignored;
  total.handed_off += more.handed_off;
  total.retried += more.retried;
  total.dead += more.dead;
  return total;
}

bool contains(std::span<const tenant_lane> lanes, const tenant_lane& lane) {
  return std::find(lanes.begin(), lanes.end(), lane) != lanes.end();
}

void add_once(std::vector<tenant_lane>& lanes, const tenant_lane& lane) {
  if (!contains(lanes, lane)) lanes.push_back(lane);
}

}  // namespace

poster::poster(db::pool& connections, const core::currency_table& currencies, service::logger& log,
               service::metrics_registry* metrics, poster_settings settings)
    : connections_(connections), currencies_(currencies), log_(log), settings_(settings) {
  if (metrics != nullptr) {
    const char* outcomes[] = {"posted", "ignored", "handed_off", "retried", "dead"};
    for (std::size_t i = 0; i < counters_.size(); ++i) {
      counters_[i] = &metrics->add_counter(
          "bankworker_stripe_postings_total",
          "Stripe events posted from the inbox, by the posters or as the inbox stored them, by outcome: posted or "
          "ignored by the posting rules, handed_off to a stripe.post job (the Stripe API is needed), retried after a "
          "failure, dead (dead-lettered).",
          {{"outcome", outcomes[i]}});
    }
  }
  for (std::size_t i = 0; i < settings_.threads; ++i) threads_.emplace_back([this] { run(); });
}

poster::~poster() { stop(); }

void poster::wake() {
  {
    std::lock_guard lock(mutex_);
    woken_ = true;
  }
  wake_.notify_one();
}

void poster::wake(std::span<const tenant_lane> lanes) {
  {
    std::lock_guard lock(mutex_);
    for (const tenant_lane& at : lanes) add_once(woken_lanes_, at);
  }
  wake_.notify_one();
}

bool poster::resting_locked(const tenant_lane& at, std::chrono::steady_clock::time_point now) const {
  return std::any_of(resting_.begin(), resting_.end(),
                     [&](const auto& rest) { return rest.first == at && rest.second > now; });
}

std::chrono::steady_clock::time_point poster::rest_end_locked() const {
  auto earliest = std::chrono::steady_clock::time_point::max();
  for (const auto& [at, until] : resting_) {
    if (contains(woken_lanes_, at) && !contains(posting_now_, at)) earliest = std::min(earliest, until);
  }
  return earliest;
}

std::optional<tenant_lane> poster::take_woken_locked() {
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(resting_, [&](const auto& rest) { return rest.second <= now; });
  const auto found = std::find_if(woken_lanes_.begin(), woken_lanes_.end(), [&](const tenant_lane& at) {
    return !contains(posting_now_, at) && !resting_locked(at, now);
  });
  if (found == woken_lanes_.end()) return std::nullopt;
  const tenant_lane taken = *found;
  woken_lanes_.erase(found);
  posting_now_.push_back(taken);
  return taken;
}

poster_counts poster::post_woken(const tenant_lane& at) {
  bool more = false;
  // Whatever happens, the lane leaves posting_now_ (a full round finds what is left), and goes to
  // the back of woken_lanes_ when more is waiting in it: the other lanes and tenants come first.
  struct release {
    poster& self;
    const tenant_lane& at;
    const bool& more;
    ~release() {
      {
        std::lock_guard lock(self.mutex_);
        std::erase(self.posting_now_, at);
        if (more) add_once(self.woken_lanes_, at);
        // A lane that had less than a batch waiting rests a moment, so that under load its next
        // batch is fuller (batch_rest); a full one goes on at once.
        std::erase_if(self.resting_, [&](const auto& rest) { return rest.first == at; });
        if (!more && self.settings_.batch_rest.count() > 0) {
          self.resting_.emplace_back(at, std::chrono::steady_clock::now() + self.settings_.batch_rest);
        }
      }
      self.wake_.notify_all();
    }
  } releaser{*this, at, more};
  const poster_counts counts = post_lane(at, more);
  count(counts);
  return counts;
}

void poster::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void poster::count(const poster_counts& counts) {
  if (counters_[0] == nullptr) return;
  const std::uint64_t values[] = {counts.posted, counts.ignored, counts.handed_off, counts.retried, counts.dead};
  for (std::size_t i = 0; i < counters_.size(); ++i) {
    if (values[i] != 0) counters_[i]->fetch_add(values[i], std::memory_order_relaxed);
  }
}

poster_counts poster::post_round() {
  bool busy = false;
  return round(busy);
}

poster_counts poster::round(bool& busy) {
  std::optional<core::uuid> after;
  {
    std::lock_guard lock(mutex_);
    after = cursor_;
  }
  std::vector<core::uuid> tenants;
  {
    db::pool::lease lease = connections_.checkout();
    try {
      pqxx::read_transaction tx(lease.connection(), "bankworker_stripe_ready");
      tenants = ready_tenants(tx, after, settings_.tenants_per_round);
      tx.commit();
    } catch (const pqxx::broken_connection&) {
      lease.discard();
      throw;
    }
  }
  // A full list: more tenants may follow, the next round starts after the last. Otherwise the
  // next round starts from the first tenant again (and soon, if this one began part-way).
  const bool full = tenants.size() == settings_.tenants_per_round;
  {
    std::lock_guard lock(mutex_);
    cursor_ = full ? std::optional<core::uuid>(tenants.back()) : std::nullopt;
  }
  busy = full || after.has_value();
  poster_counts counts;
  for (const core::uuid& tenant : tenants) {
    for (std::uint8_t lane = 0; lane < posting_lanes; ++lane) {
      bool more = false;
      counts += post_lane({tenant, lane}, more);
      busy = busy || more;
    }
  }
  count(counts);
  return counts;
}

poster_counts poster::post_lane(const tenant_lane& at, bool& more) {
  const core::uuid& tenant = at.tenant;
  std::vector<std::string> claimed;
  poster_counts counts;
  const bool chart_known = charts_.contains(tenant);
  try {
    db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      if (!try_lock_posting_lane(tx, at.lane)) return;  // another poster has this lane now
      const std::vector<waiting_event> events = claim_waiting_events(tx, at.lane, settings_.batch_max);
      more = events.size() == settings_.batch_max;
      for (const waiting_event& event : events) claimed.push_back(event.event_id);
      batch_work work = plan_batch(events, currencies_, settings_.api_configured);
      write_batch(tx, tenant, work, !chart_known);
      counts = work.counts;
    });
  } catch (const std::exception& error) {
    if (is_outage(error) || claimed.empty()) throw;
    log_.warn("stripe posting batch rolled back; its events post one at a time",
              {{"tenant", tenant.to_string()},
               {"events", static_cast<std::uint64_t>(claimed.size())},
               {"reason", error.what()}});
    return post_alone(at, claimed);
  }
  if (!chart_known && counts.posted > 0) charts_.add(tenant);  // committed with the batch
  return counts;
}

poster_counts poster::post_alone(const tenant_lane& at, std::span<const std::string> event_ids) {
  const core::uuid& tenant = at.tenant;
  poster_counts total;
  for (const std::string& event_id : event_ids) {
    bool locked = true;
    std::optional<posting_failure> failure;
    try {
      total += db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        if (!try_lock_posting_lane(tx, at.lane)) {
          locked = false;
          return poster_counts{};
        }
        const std::optional<waiting_event> event = claim_waiting_event(tx, event_id);
        if (!event) return poster_counts{};  // posted or given back meanwhile
        batch_work work = plan_batch(std::span(&*event, 1), currencies_, settings_.api_configured);
        write_batch(tx, tenant, work, true);
        return work.counts;
      });
    } catch (const std::exception& error) {
      if (is_outage(error)) throw;
      failure = posting_failure{event_id, error.what(), is_final(error)};
    }
    if (!locked) break;  // another poster took the lane; the rest are its now
    if (!failure) continue;
    total += db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      poster_counts counts;
      if (!try_lock_posting_lane(tx, at.lane) || !claim_waiting_event(tx, event_id)) return counts;
      const std::size_t dead = record_posting_failures(tx, std::span(&*failure, 1));
      counts.dead = dead;
      counts.retried = 1 - dead;
      return counts;
    });
  }
  return total;
}

void poster::run() {
  bool database_away = false;
  auto next_round = std::chrono::steady_clock::now();  // a full round at start
  for (;;) {
    std::optional<tenant_lane> woken;
    bool full_round = false;
    {
      std::unique_lock lock(mutex_);
      for (;;) {
        if (stopping_) return;
        woken = take_woken_locked();
        if (woken) break;
        if (woken_ || std::chrono::steady_clock::now() >= next_round) {
          full_round = true;  // asked for, or idle_poll passed
          woken_ = false;
          break;
        }
        // Until the round is due, or a woken lane's rest ends, or a wake.
        wake_.wait_until(lock, std::min(next_round, rest_end_locked()));
      }
    }
    bool busy = false;
    try {
      if (full_round) {
        round(busy);
      } else {
        post_woken(*woken);
      }
      if (database_away) log_.info("stripe posting resumed: the database is back");
      database_away = false;
    } catch (const std::exception& error) {
      busy = false;
      if (is_outage(error)) {
        if (!database_away) log_.warn("stripe posting paused: the database is unreachable", {{"reason", error.what()}});
        database_away = true;
      } else {
        log_.error("stripe posting round failed", {{"reason", error.what()}});
      }
    }
    if (full_round) next_round = std::chrono::steady_clock::now() + (busy ? std::chrono::milliseconds(0) : settings_.idle_poll);
  }
}

}  // namespace bankworker::stripe
