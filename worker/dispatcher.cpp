#include "worker/dispatcher.hpp"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/except>

#include "core/assert.hpp"
#include "core/limits.hpp"
#include "crypto/random.hpp"
#include "db/connection_problem.hpp"

namespace bankworker::worker {

using service::logger;
using service::metric_labels;
using service::metrics_registry;

namespace {

// Waits "forever" on a timer used as an event: cancel() wakes the waiter.
constexpr std::chrono::hours event_wait{24};

void check_settings(const dispatcher_settings& settings, const crypto::secret* listen_url) {
  if (settings.concurrency == 0 || settings.concurrency > limits::concurrency_max) {
    throw std::invalid_argument("dispatcher concurrency must be 1..concurrency_max");
  }
  if (settings.poll_interval.count() < 0 || settings.poll_interval > limits::job_poll_interval_max) {
    throw std::invalid_argument("dispatcher poll_interval must be 0 (off) ..job_poll_interval_max");
  }
  if (settings.rescue_interval.count() <= 0 || settings.rescue_interval > limits::job_rescue_interval_max) {
    throw std::invalid_argument("dispatcher rescue_interval must be 1..job_rescue_interval_max ms");
  }
  if (settings.notify_debounce.count() < 0 || settings.notify_debounce >= limits::job_poll_interval_max) {
    throw std::invalid_argument("dispatcher notify_debounce must be 0 (off) ..below job_poll_interval_max");
  }
  if (settings.heartbeat_interval.count() <= 0 || settings.drain_timeout.count() < 0 ||
      settings.drain_timeout > limits::job_drain_timeout_max || settings.retry_delay.count() <= 0) {
    throw std::invalid_argument("dispatcher heartbeat, drain and retry durations out of range");
  }
  if (settings.listen && listen_url == nullptr) throw std::invalid_argument("dispatcher listen needs a URL");
  if (settings.prune_interval.count() < 0) throw std::invalid_argument("dispatcher prune_interval must not be negative");
  for (const auto& [kind, limit] : settings.kind_concurrency_max) {
    if (limit == 0 || limit > settings.concurrency) {
      throw std::invalid_argument("dispatcher limit for kind " + kind + " must be 1..concurrency");
    }
  }
}

}  // namespace

dispatcher::dispatcher(boost::asio::io_context& io, boost::asio::thread_pool& blocking, queue::job_queue& jobs,
                       const crypto::secret* listen_url, dispatcher_settings settings, logger& log)
    : io_(io),
      blocking_(blocking),
      jobs_(jobs),
      settings_(settings),
      log_(log),
      strand_(boost::asio::make_strand(io)),
      owner_(crypto::random_uuid()),
      claim_timer_(strand_),
      notify_timer_(strand_),
      completion_timer_(strand_),
      completion_retry_timer_(strand_),
      heartbeat_timer_(strand_),
      rescue_timer_(strand_),
      drain_timer_(strand_) {
  check_settings(settings_, listen_url);
  // A heartbeat must land well inside the lease, or live jobs would be rescued under our feet.
  if (settings_.heartbeat_interval * 2 > jobs_.settings().lease) {
    throw std::invalid_argument("dispatcher heartbeat_interval must be at most half the queue lease");
  }
  if (settings_.listen) {
    queue::listener_settings listen_config;
    listen_config.channel = queue::notify_channel;
    listen_config.on_error = [this](const std::exception& why) {
      // A database outage is logged once by the pool; a lost listen connection alone is news.
      if (db::is_connection_problem(why)) {
        log_.debug("job notifications lost with the database; re-listening", {{"error", db::problem_summary(why)}});
      } else {
        log_.warn("job notifications lost; reconnecting (polling covers the gap)", {{"error", db::problem_summary(why)}});
      }
    };
    listener_ = std::make_unique<queue::listener>(strand_, blocking_, *listen_url, std::move(listen_config),
                                                  [this] { wake_claims_for_notify(); });
  }
}

dispatcher::~dispatcher() = default;

void dispatcher::add_handler(std::string kind, job_handler handler) {
  BW_ASSERT(handler != nullptr);
  if (metrics_ != nullptr) metrics_for(kind);
  handlers_.insert_or_assign(std::move(kind), std::move(handler));
}

std::vector<std::string> dispatcher::kinds() const {
  std::vector<std::string> names;
  names.reserve(handlers_.size());
  for (const auto& [kind, handler] : handlers_) names.push_back(kind);
  return names;
}

void dispatcher::set_metrics(metrics_registry& registry) {
  metrics_ = &registry;
  for (const auto& [kind, handler] : handlers_) metrics_for(kind);
}

void dispatcher::listen_also(queue::listener_channel extra) {
  if (listener_) listener_->add_channel(std::move(extra));
}

void dispatcher::when_listening(std::function<void()> callback) {
  if (listener_) listener_->when_listening(std::move(callback));
}

void dispatcher::stop() {
  boost::asio::post(strand_, [this] {
    if (stopping_) return;
    stopping_ = true;
    wake_claims();
    drain_timer_.cancel();
    if (listener_) listener_->stop();
  });
}

void dispatcher::wake_claims() {
  claim_wake_ = true;
  claim_timer_.cancel();
}

void dispatcher::wake_claims_for_notify() {
  if (notify_wake_pending_) return;  // the wake at the end of this interval covers this one too
  const auto now = std::chrono::steady_clock::now();
  const auto next_allowed = notify_woken_at_ + settings_.notify_debounce;
  if (now >= next_allowed) {
    notify_woken_at_ = now;
    wake_claims();
    return;
  }
  notify_wake_pending_ = true;
  notify_timer_.expires_at(next_allowed);
  notify_timer_.async_wait([this](const boost::system::error_code& error) {
    if (error) return;  // cancelled at shutdown: the dispatcher may be gone
    notify_wake_pending_ = false;
    if (finished_) return;
    notify_woken_at_ = std::chrono::steady_clock::now();
    wake_claims();
  });
}

void dispatcher::child_finished() {
  BW_ASSERT(children_ > 0);
  --children_;
  drain_timer_.cancel();
}

boost::asio::awaitable<void> dispatcher::sleep(boost::asio::steady_timer& timer, std::chrono::milliseconds duration) {
  timer.expires_after(duration);
  boost::system::error_code cancelled;
  co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, cancelled));
}

boost::asio::awaitable<void> dispatcher::run() {
  const auto on_child_exit = [this](std::exception_ptr failure) {
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& error) {
        log_.error("dispatcher task failed", {{"error", error.what()}});
      }
    }
    child_finished();
  };
  children_ = 4;
  boost::asio::co_spawn(strand_, claim_loop(), on_child_exit);
  boost::asio::co_spawn(strand_, completion_loop(), on_child_exit);
  boost::asio::co_spawn(strand_, heartbeat_loop(), on_child_exit);
  boost::asio::co_spawn(strand_, rescue_loop(), on_child_exit);
  if (listener_) {
    ++children_;
    boost::asio::co_spawn(strand_, listener_->run(), on_child_exit);
  }

  while (!stopping_) co_await sleep(drain_timer_, event_wait);
  // Stop claiming first, so that no claim lands after the drain has decided what to release.
  while (!claim_loop_done_) co_await sleep(drain_timer_, event_wait);

  const auto deadline = std::chrono::steady_clock::now() + settings_.drain_timeout;
  while (!running_.empty() && std::chrono::steady_clock::now() < deadline) {
    drain_timer_.expires_at(deadline);
    boost::system::error_code woken;
    co_await drain_timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, woken));
  }

  // Whatever still runs is given back; its handler sees lease_lost and its effect cannot commit
  // (complete_in finds the lease gone).
  std::vector<queue::job_ref> unfinished;
  for (auto& [id, entry] : running_) {
    if (entry->handler_done) continue;
    entry->released = true;
    entry->lease_lost = true;
    unfinished.push_back(entry->job.ref);
  }
  if (!unfinished.empty()) {
    try {
      stats_.released += co_await queue::run_blocking(blocking_, [this, &unfinished] {
        return jobs_.release(owner_, unfinished);
      });
    } catch (const std::exception& error) {
      // The leases expire on their own and the jobs are rescued; only the wait is longer.
      log_.error("could not release unfinished jobs at shutdown", {{"error", error.what()}});
    }
    log_.info("released unfinished jobs", {{"jobs", unfinished.size()}});
  }

  finished_ = true;
  completion_timer_.cancel();
  heartbeat_timer_.cancel();
  rescue_timer_.cancel();
  claim_timer_.cancel();
  notify_timer_.cancel();
  if (listener_) listener_->stop();
  while (children_ > 0) co_await sleep(drain_timer_, event_wait);
}

std::size_t dispatcher::claim_slots() const noexcept {
  BW_ASSERT(handlers_running_ <= running_.size());
  BW_ASSERT(recording_ <= running_.size() - handlers_running_);
  // Outcomes not yet in a completion statement; the batch being written does not count, so a
  // claim overlaps with its commit (measured: claims and completions of 1,000 jobs used to take
  // turns in each process).
  const std::size_t awaiting_record = running_.size() - handlers_running_ - recording_;
  if (awaiting_record >= settings_.concurrency) return 0;
  const std::size_t free = settings_.concurrency - std::min<std::size_t>(handlers_running_, settings_.concurrency);
  // Claim in batches: with a few slots free and others busy, wait for more rather than sending a
  // statement (and a commit) per finished job. A quarter of the slots, or all of them when idle.
  const std::size_t batch_min = std::max<std::size_t>(1, settings_.concurrency / 4);
  if (free < batch_min && handlers_running_ > 0) return 0;
  return free;
}

// Kinds at their limit are left in the queue, for this process later or for another one now;
// kinds this process cannot run are always left.
std::vector<std::string> dispatcher::kinds_to_skip() const {
  std::vector<std::string> full_kinds = settings_.never_claim_kinds;
  for (const auto& [kind, limit] : settings_.kind_concurrency_max) {
    const auto running = kind_running_.find(kind);
    if (running != kind_running_.end() && running->second >= limit) full_kinds.push_back(kind);
  }
  return full_kinds;
}

// Starts a handler for each claimed job. One claim may bring more jobs of a limited kind than it
// has slots left; those are returned to be given back (their attempt does not count) and the next
// claim skips the kind.
std::vector<queue::job_ref> dispatcher::start_claimed(std::vector<queue::job>& claimed) {
  std::vector<queue::job_ref> over_limit;
  for (queue::job& job : claimed) {
    // A job this process still tracks (its give-back or outcome committed in an outage but the
    // answer was lost, and it became claimable again) is not run twice: it goes straight back.
    if (running_.contains(job.ref.id)) {
      over_limit.push_back(job.ref);
      continue;
    }
    const auto limit = settings_.kind_concurrency_max.find(job.kind);
    if (limit != settings_.kind_concurrency_max.end()) {
      std::uint32_t& running = kind_running_[job.kind];
      if (running >= limit->second) {
        over_limit.push_back(job.ref);
        continue;
      }
      ++running;
    }
    const std::int64_t id = job.ref.id;
    auto entry = std::make_unique<running_job>();
    entry->job = std::move(job);
    running_.emplace(id, std::move(entry));
    ++handlers_running_;
    ++stats_.claimed;
    if (kind_metrics* series = metrics_for(running_.at(id)->job.kind)) series->claimed->fetch_add(1, std::memory_order_relaxed);
    boost::asio::co_spawn(strand_, run_job(id), [this, id](std::exception_ptr failure) {
      // run_job classifies every exception itself; anything here is a bug in the dispatcher.
      BW_INVARIANT(failure == nullptr);
      static_cast<void>(id);
    });
  }
  return over_limit;
}

boost::asio::awaitable<void> dispatcher::claim_loop() {
  while (!stopping_) {
    const std::size_t free = claim_slots();
    if (free == 0) {
      if (!claim_wake_) co_await sleep(claim_timer_, event_wait);
      claim_wake_ = false;
      continue;
    }
    claim_wake_ = false;
    if (claim_answer_lost_ && !co_await release_unknown_leases()) {
      co_await sleep(claim_timer_, settings_.retry_delay);
      continue;
    }
    const std::vector<std::string> full_kinds = kinds_to_skip();
    std::vector<queue::job> claimed;
    bool claim_failed = false;
    ++stats_.claim_rounds;
    try {
      claimed = co_await queue::run_blocking(blocking_, [this, free, &full_kinds] {
        return jobs_.claim(owner_, free, full_kinds);
      });
    } catch (const std::exception& error) {
      // While the database is away (a failover) the pool logs it once; each failed claim waits
      // retry_delay, so the loop never spins faster than that.
      if (!db::is_connection_problem(error)) log_.warn("claim failed; retrying", {{"error", error.what()}});
      claim_failed = true;
      // The claim may have committed with its answer lost (a connection that died as it committed,
      // a commit in doubt): then jobs are leased to us that we never saw. Before the next claim
      // they go back, uncounted (release_unknown_leases).
      claim_answer_lost_ = true;
    }
    if (claim_failed) {
      co_await sleep(claim_timer_, settings_.retry_delay);
      continue;
    }
    const std::vector<queue::job_ref> over_limit = start_claimed(claimed);
    if (!over_limit.empty()) {
      try {
        co_await queue::run_blocking(blocking_, [this, &over_limit] { return jobs_.release(owner_, over_limit); });
      } catch (const std::exception& error) {
        // Their leases expire and the rescue puts them back: slower, not lost.
        log_.warn("could not give back jobs over their kind's limit", {{"error", error.what()}});
      }
    }
    // A claim that found work may have been cut short by fairness shares: claim again at once.
    // One that found nothing waits for a notification, a finished job or the poll interval.
    if (claimed.empty() && !claim_wake_) {
      co_await sleep(claim_timer_, settings_.poll_interval.count() > 0 ? settings_.poll_interval
                                                                       : std::chrono::milliseconds(event_wait));
    }
  }
  claim_loop_done_ = true;
  drain_timer_.cancel();
}

dispatcher::kind_metrics* dispatcher::metrics_for(const std::string& kind) {
  if (metrics_ == nullptr) return nullptr;
  const auto found = kind_metrics_.find(kind);
  if (found != kind_metrics_.end()) return &found->second;
  // Kinds come from registered handlers or the jobs table; cap the series so a flood of unknown
  // kinds cannot grow /metrics without bound.
  constexpr std::size_t kinds_max = 64;
  if (kind_metrics_.size() >= kinds_max) return nullptr;
  const auto counter = [&](std::string_view name, std::string_view help, std::string_view outcome) {
    metric_labels labels{{"kind", kind}};
    if (!outcome.empty()) labels.emplace_back("outcome", std::string(outcome));
    return &metrics_->add_counter(name, help, std::move(labels));
  };
  constexpr std::string_view finished_name = "bankworker_jobs_finished_total";
  constexpr std::string_view finished_help = "Jobs finished by this process, by kind and outcome (dead: no retry left).";
  kind_metrics series;
  series.claimed = counter("bankworker_jobs_claimed_total", "Jobs claimed by this process, by kind.", "");
  series.succeeded = counter(finished_name, finished_help, "succeeded");
  series.retried = counter(finished_name, finished_help, "retried");
  series.dead = counter(finished_name, finished_help, "dead");
  series.in_doubt = counter(finished_name, finished_help, "in_doubt");
  series.duration = &metrics_->add_histogram("bankworker_job_duration_seconds",
                                             "Time from claim to the handler's outcome, by kind.", {{"kind", kind}});
  return &kind_metrics_.emplace(kind, series).first->second;
}

void dispatcher::count_outcome(const running_job& entry, const queue::outcome& result) {
  kind_metrics* series = metrics_for(entry.job.kind);
  if (series == nullptr) return;
  series->duration->record_us(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - entry.started).count()));
  metrics_registry::counter* counter = series->dead;
  switch (result.kind) {
    case queue::outcome_kind::done: counter = series->succeeded; break;
    case queue::outcome_kind::retry:
      counter = entry.job.attempt < entry.job.attempts_max ? series->retried : series->dead;
      break;
    case queue::outcome_kind::in_doubt: counter = series->in_doubt; break;
    case queue::outcome_kind::needs_user_action:
    case queue::outcome_kind::failed_permanently: break;
  }
  counter->fetch_add(1, std::memory_order_relaxed);
}

// Every job leased to this dispatcher that it does not hold goes back, its attempt uncounted: the
// jobs of a claim whose answer was lost (issue #18), which would otherwise wait for the rescue at
// lease expiry and be counted an attempt. It names every job in running_ (running, or done and
// waiting for its outcome to be written); it runs in the claim loop, so no claim of ours is in
// flight. False when it could not be done (the database is still away): try again before the
// next claim.
boost::asio::awaitable<bool> dispatcher::release_unknown_leases() {
  std::vector<queue::job_ref> held;
  held.reserve(running_.size());
  for (const auto& [id, entry] : running_) held.push_back(entry->job.ref);
  try {
    const std::size_t released = co_await queue::run_blocking(
        blocking_, [this, &held] { return jobs_.release_unknown(owner_, held); });
    claim_answer_lost_ = false;
    if (released > 0) log_.warn("gave back jobs of a claim whose answer was lost", {{"jobs", released}});
    co_return true;
  } catch (const std::exception& error) {
    if (!db::is_connection_problem(error)) log_.warn("could not give back jobs of a lost claim", {{"error", error.what()}});
    co_return false;
  }
}

boost::asio::awaitable<void> dispatcher::run_job(std::int64_t id) {
  running_job* entry = running_.at(id).get();
  queue::outcome result;
  bool database_lost = false;
  const auto handler = handlers_.find(entry->job.kind);
  if (handler == handlers_.end()) {
    result = queue::outcome::failed_permanently("no handler for job kind " + entry->job.kind);
  } else {
    // The job boundary (STYLE.md §3): every exception gets exactly one meaning here.
    try {
      result = co_await handler->second(
          entry->job, job_context(jobs_, blocking_, owner_, entry->lease_lost, entry->completed_by_handler));
    } catch (const lease_lost_error&) {
      // The handler's transaction found its lease gone and rolled back: nothing committed.
      result = queue::outcome::retry("lease lost");
    } catch (const core::invariant_violation& error) {
      result = queue::outcome::failed_permanently(std::string("invariant violated: ") + error.what());
    } catch (const pqxx::in_doubt_error& error) {
      result = queue::outcome::in_doubt(error.what());
    } catch (const std::exception& error) {
      // A failover symptom (connection lost, server read-only or shutting down) is the
      // database's, not the job's: the job is given back with its attempt uncounted, to run
      // again once there is a primary (db/connection_problem.hpp). Its effect did not commit:
      // a commit that may have landed is in_doubt_error, above.
      database_lost = db::is_connection_problem(error);
      result = queue::outcome::retry(error.what());
    }
  }
  entry->handler_done = true;
  if (!database_lost) count_outcome(*entry, result);
  BW_ASSERT(handlers_running_ > 0);
  --handlers_running_;
  if (const auto limited = kind_running_.find(entry->job.kind); limited != kind_running_.end()) {
    BW_ASSERT(limited->second > 0);
    --limited->second;
  }
  if (claim_slots() > 0) wake_claims();
  if (entry->released) {
    running_.erase(id);
    co_return;
  }
  if (entry->completed_by_handler || entry->lease_lost) {
    if (entry->completed_by_handler) ++stats_.finished;
    if (entry->lease_lost) ++stats_.lease_lost;
    running_.erase(id);
    wake_claims();
    drain_timer_.cancel();
    co_return;
  }
  if (database_lost) {
    pending_releases_.push_back(entry->job.ref);
  } else {
    pending_completions_.push_back({entry->job.ref, entry->job.attempt, std::move(result)});
  }
  completion_timer_.cancel();
}

boost::asio::awaitable<bool> dispatcher::write_through_outage(const char* what, std::size_t jobs,
                                                              std::function<void()> write) {
  // Other errors get three tries; a database outage gets as many as fit in outage_max, quietly
  // (the pool logs the outage once), because giving up here costs the jobs an attempt each.
  const auto outage_deadline = std::chrono::steady_clock::now() + settings_.outage_max;
  for (int other_failures = 0; other_failures < 3;) {
    try {
      co_await queue::run_blocking(blocking_, [&write] { write(); });
      co_return true;
    } catch (const std::exception& error) {
      if (!db::is_connection_problem(error)) {
        ++other_failures;
        log_.warn(what, {{"error", error.what()}, {"jobs", jobs}});
      } else if (std::chrono::steady_clock::now() >= outage_deadline) {
        break;
      }
    }
    co_await sleep(completion_retry_timer_, settings_.retry_delay);
  }
  co_return false;
}

boost::asio::awaitable<void> dispatcher::completion_loop() {
  for (;;) {
    if (pending_completions_.empty() && pending_releases_.empty()) {
      if (finished_) break;
      co_await sleep(completion_timer_, event_wait);
      continue;
    }
    if (!pending_releases_.empty()) {
      // Jobs whose handler met a database outage go back with their attempt uncounted.
      std::vector<queue::job_ref> back;
      const std::size_t take = std::min(pending_releases_.size(), limits::job_batch_max);
      back.assign(pending_releases_.begin(), pending_releases_.begin() + static_cast<std::ptrdiff_t>(take));
      pending_releases_.erase(pending_releases_.begin(), pending_releases_.begin() + static_cast<std::ptrdiff_t>(take));
      recording_ = back.size();
      std::size_t released = 0;
      const bool written = co_await write_through_outage("giving back jobs after a database outage failed", back.size(),
                                                         [this, &back, &released] { released = jobs_.release(owner_, back); });
      if (!written) log_.error("could not give back jobs after a database outage; they will be rescued", {{"jobs", back.size()}});
      stats_.released += released;
      for (const queue::job_ref& ref : back) running_.erase(ref.id);
      recording_ = 0;
      wake_claims();
      drain_timer_.cancel();
      continue;
    }
    // Everything that finished while the previous batch was being written goes in one statement.
    std::vector<queue::completion> batch;
    const std::size_t take = std::min(pending_completions_.size(), limits::job_batch_max);
    batch.assign(std::make_move_iterator(pending_completions_.begin()),
                 std::make_move_iterator(pending_completions_.begin() + static_cast<std::ptrdiff_t>(take)));
    pending_completions_.erase(pending_completions_.begin(), pending_completions_.begin() + static_cast<std::ptrdiff_t>(take));
    recording_ = batch.size();
    if (claim_slots() > 0) wake_claims();
    std::size_t recorded = 0;
    const bool written = co_await write_through_outage("recording job outcomes failed", batch.size(),
                                                       [this, &batch, &recorded] { recorded = jobs_.complete(owner_, batch).size(); });
    if (written) {
      stats_.finished += recorded;
      stats_.lease_lost += batch.size() - recorded;
    } else {
      // The leases run out and the jobs are rescued and run again: handlers are idempotent or
      // check their lease with their effect, so running again is safe, only slower.
      log_.error("giving up recording job outcomes; the jobs will run again", {{"jobs", batch.size()}});
    }
    for (const queue::completion& done : batch) running_.erase(done.ref.id);
    recording_ = 0;
    wake_claims();
    drain_timer_.cancel();
  }
}

boost::asio::awaitable<void> dispatcher::heartbeat_loop() {
  bool database_lost = false;
  while (!finished_) {
    // After a database outage the next heartbeat comes at retry_delay, not a whole interval
    // later, so leases held across a failover are renewed as soon as there is a primary.
    co_await sleep(heartbeat_timer_, database_lost ? settings_.retry_delay : settings_.heartbeat_interval);
    if (finished_) break;
    database_lost = false;
    // Jobs whose outcome or give-back waits to be written keep their lease too: through an outage
    // that wait can outlast a lease, and a rescue would count an attempt against them.
    std::vector<queue::job_ref> live;
    for (const auto& [id, entry] : running_) {
      if (!entry->released) live.push_back(entry->job.ref);
    }
    if (live.empty()) continue;
    try {
      const auto held = co_await queue::run_blocking(blocking_, [this, &live] { return jobs_.extend_leases(owner_, live); });
      for (const queue::job_ref& ref : live) {
        if (std::find(held.begin(), held.end(), ref) != held.end()) continue;
        const auto found = running_.find(ref.id);
        if (found != running_.end()) found->second->lease_lost = true;
      }
    } catch (const std::exception& error) {
      database_lost = db::is_connection_problem(error);
      if (!database_lost) log_.warn("lease heartbeat failed", {{"error", error.what()}});
    }
  }
}

boost::asio::awaitable<void> dispatcher::rescue_loop() {
  auto next_prune = std::chrono::steady_clock::now() + settings_.prune_interval;
  while (!finished_) {
    co_await sleep(rescue_timer_, settings_.rescue_interval);
    if (finished_ || stopping_) continue;
    if (settings_.prune_interval.count() > 0 && std::chrono::steady_clock::now() >= next_prune) {
      next_prune = std::chrono::steady_clock::now() + settings_.prune_interval;
      try {
        // At most 10 statements of 10,000 rows per round: retention never holds locks for long,
        // and a backlog is worked off over several rounds.
        const std::size_t pruned = co_await queue::run_blocking(blocking_, [this] {
          return jobs_.prune(settings_.succeeded_retention, settings_.dead_retention, 10'000, 10);
        });
        if (pruned > 0) log_.info("pruned finished jobs past retention", {{"jobs", pruned}});
      } catch (const std::exception& error) {
        log_.warn("pruning finished jobs failed", {{"error", error.what()}});
      }
    }
    try {
      const std::size_t rescued = co_await queue::run_blocking(blocking_, [this] { return jobs_.rescue_expired(); });
      if (rescued > 0) {
        log_.info("rescued jobs whose lease expired", {{"jobs", rescued}});
        wake_claims();
      }
    } catch (const std::exception& error) {
      if (!db::is_connection_problem(error)) log_.warn("rescue of expired leases failed", {{"error", error.what()}});
    }
  }
}

}  // namespace bankworker::worker
