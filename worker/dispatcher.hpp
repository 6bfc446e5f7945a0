#pragma once
// The dispatcher: claims jobs while it has free slots, runs each with the handler registered for
// its kind (up to `concurrency` at once), renews their leases, records outcomes in batches, rescues
// jobs whose worker died, and on stop() drains: it stops claiming, waits for running jobs up to
// drain_timeout, then releases the leases of what is left.
//
// Threads: every dispatcher coroutine and every handler runs on one strand of the io_context, so
// the dispatcher's state needs no lock. Database calls, all blocking, run on `blocking` (the DB
// thread pool) through queue::run_blocking.
//
// Wake-ups: a NOTIFY (queue::listener) or a finished job wakes the claim loop at once; with
// nothing to do it also polls every poll_interval (≤ job_poll_interval_max), which covers lost
// notifications. Either can be turned off (tests check each alone).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "core/limits.hpp"
#include "core/uuid.hpp"
#include "crypto/secret.hpp"
#include "queue/job.hpp"
#include "queue/listener.hpp"
#include "queue/queue.hpp"
#include "queue/run_blocking.hpp"
#include "service/job.hpp"
#include "service/log.hpp"
#include "service/metrics.hpp"

namespace bankworker::worker {

using service::logger;
using service::metrics_registry;
using service::duration_histogram;

using service::complete_in_or_throw;
using service::job_context;
using service::job_handler;
using service::lease_lost_error;

struct dispatcher_settings {
  std::uint32_t concurrency = 8;
  // Polling when idle; zero turns polling off (then only NOTIFY and finished jobs wake a claim).
  std::chrono::milliseconds poll_interval{1'000};
  // LISTEN for NOTIFY wake-ups (needs listen_url).
  bool listen = true;
  // NOTIFY wake-ups start at most one claim round per this interval: the first at once, the rest
  // of a burst folded into one at the interval's end (limits::job_notify_debounce_ms says why).
  // Zero turns the debounce off.
  std::chrono::milliseconds notify_debounce{limits::job_notify_debounce_ms};
  std::chrono::milliseconds heartbeat_interval{20'000};
  std::chrono::milliseconds rescue_interval{5'000};
  std::chrono::milliseconds drain_timeout{10'000};
  // How long a failed claim or completion waits before trying again.
  std::chrono::milliseconds retry_delay{1'000};
  // How long outcomes (and give-backs) are tried again through a database outage before the jobs
  // are left to the rescue (which counts an attempt): far longer than a failover takes.
  std::chrono::milliseconds outage_max{300'000};
  // Retention: finished jobs are deleted in bounded batches once they are this old, so the hot
  // table stays small. Dead jobs (failed) are kept longer for operators to inspect and retry.
  // Zero turns pruning off here: `bankworker run` leaves it to the scheduler, which runs it once
  // per interval across all processes (worker/scheduler.hpp).
  std::chrono::milliseconds prune_interval{60'000};
  std::chrono::hours succeeded_retention{24};
  std::chrono::hours dead_retention{24 * 30};
  // Optional per-kind limits in this process (a provider's rate, say): at most this many jobs of
  // the kind run at once. Kinds not listed are limited by `concurrency` alone.
  std::map<std::string, std::uint32_t, std::less<>> kind_concurrency_max;
  // Kinds this process cannot run (a provider whose settings it lacks): never claimed here, so
  // they wait with their attempts untouched for a process that can run them.
  std::vector<std::string> never_claim_kinds;
};

struct dispatcher_stats {
  std::uint64_t claim_rounds = 0;  // claim statements sent
  std::uint64_t claimed = 0;
  std::uint64_t finished = 0;
  std::uint64_t released = 0;
  std::uint64_t lease_lost = 0;
};

class dispatcher {
 public:
  // Everything passed by reference must outlive the dispatcher; `listen_url` may be null when
  // settings.listen is false.
  dispatcher(boost::asio::io_context& io, boost::asio::thread_pool& blocking, queue::job_queue& jobs,
             const crypto::secret* listen_url, dispatcher_settings settings, logger& log);
  dispatcher(const dispatcher&) = delete;
  dispatcher& operator=(const dispatcher&) = delete;
  ~dispatcher();

  void add_handler(std::string kind, job_handler handler);
  // The kinds that have a handler, sorted.
  std::vector<std::string> kinds() const;
  // Publishes job metrics by kind (claimed, outcomes, durations) in `registry`, which outlives the
  // dispatcher. Call before run(). Every series of every handled kind (added before or after this
  // call) exists from then on at zero, so an alert on increase() of the dead outcome sees the
  // first death rather than the series appearing with it.
  void set_metrics(metrics_registry& registry);

  // Listens on a further channel on the job channel's LISTEN connection (nothing when
  // settings.listen is false); its callbacks run on executor(). Call before run().
  void listen_also(queue::listener_channel extra);
  // Calls `callback` (on executor()) each time the LISTEN connection is in place. Call before run().
  void when_listening(std::function<void()> callback);

  // Runs until stop() and the drain that follows. Spawn it on executor().
  boost::asio::awaitable<void> run();
  // Stops claiming and starts the drain. Safe from any thread.
  void stop();

  boost::asio::strand<boost::asio::io_context::executor_type>& executor() noexcept { return strand_; }
  const core::uuid& owner() const noexcept { return owner_; }
  bool listening() const noexcept { return listener_ && listener_->listening(); }
  // Read on the strand, or after run() returned.
  const dispatcher_stats& stats() const noexcept { return stats_; }

 private:
  struct running_job {
    queue::job job;
    std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    std::atomic<bool> lease_lost{false};
    bool completed_by_handler = false;
    bool handler_done = false;
    bool released = false;
  };

  // One kind's series, registered on first use (strand only).
  struct kind_metrics {
    metrics_registry::counter* claimed = nullptr;
    metrics_registry::counter* succeeded = nullptr;
    metrics_registry::counter* retried = nullptr;
    metrics_registry::counter* dead = nullptr;
    metrics_registry::counter* in_doubt = nullptr;
    duration_histogram* duration = nullptr;
  };
  kind_metrics* metrics_for(const std::string& kind);
  void count_outcome(const running_job& entry, const queue::outcome& result);

  std::vector<std::string> kinds_to_skip() const;
  std::vector<queue::job_ref> start_claimed(std::vector<queue::job>& claimed);
  boost::asio::awaitable<void> claim_loop();
  boost::asio::awaitable<bool> release_unknown_leases();
  boost::asio::awaitable<void> run_job(std::int64_t id);
  boost::asio::awaitable<void> completion_loop();
  // Runs `write` on the DB threads until it succeeds; false once it gave up (see the definition).
  boost::asio::awaitable<bool> write_through_outage(const char* what, std::size_t jobs, std::function<void()> write);
  boost::asio::awaitable<void> heartbeat_loop();
  boost::asio::awaitable<void> rescue_loop();
  boost::asio::awaitable<void> sleep(boost::asio::steady_timer& timer, std::chrono::milliseconds duration);
  void wake_claims();
  void wake_claims_for_notify();
  std::size_t claim_slots() const noexcept;
  void child_finished();

  boost::asio::io_context& io_;
  boost::asio::thread_pool& blocking_;
  queue::job_queue& jobs_;
  const dispatcher_settings settings_;
  logger& log_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  const core::uuid owner_;
  std::map<std::string, job_handler, std::less<>> handlers_;
  std::unique_ptr<queue::listener> listener_;

  // Strand-only state.
  std::map<std::int64_t, std::unique_ptr<running_job>> running_;
  std::vector<queue::completion> pending_completions_;
  // Jobs whose handler met a database outage, to give back with their attempt uncounted.
  std::vector<queue::job_ref> pending_releases_;
  bool claim_wake_ = false;
  // A claim failed and may have committed with its answer lost: give back what we do not hold
  // before the next claim (release_unknown_leases).
  bool claim_answer_lost_ = false;
  bool stopping_ = false;
  bool finished_ = false;
  bool claim_loop_done_ = false;
  int children_ = 0;
  // Handlers running right now. running_ also holds jobs whose handler is done but whose outcome
  // is not recorded yet; those do not take a slot, so the next claim overlaps with the write of
  // the previous outcomes. They are bounded too (claim_slots()): fewer than `concurrency` of them
  // waiting for the completion loop when a claim starts, plus the batch it is writing.
  std::size_t handlers_running_ = 0;
  // Jobs in the completion statement being written now (the completion loop's current batch).
  // They do not hold back the next claim: with every slot's job done and waiting, the claim of the
  // next batch runs while this one is written, instead of after it.
  std::size_t recording_ = 0;
  // Handlers running per limited kind (kinds in settings_.kind_concurrency_max only).
  std::map<std::string, std::uint32_t, std::less<>> kind_running_;
  dispatcher_stats stats_;
  metrics_registry* metrics_ = nullptr;
  std::map<std::string, kind_metrics, std::less<>> kind_metrics_;
  boost::asio::steady_timer claim_timer_;
  // The notification debounce: when a NOTIFY last woke the claim loop, and the timer that wakes
  // it once more at the end of the interval for the notifications that came meanwhile.
  std::chrono::steady_clock::time_point notify_woken_at_{};
  bool notify_wake_pending_ = false;
  boost::asio::steady_timer notify_timer_;
  boost::asio::steady_timer completion_timer_;
  boost::asio::steady_timer completion_retry_timer_;
  boost::asio::steady_timer heartbeat_timer_;
  boost::asio::steady_timer rescue_timer_;
  boost::asio::steady_timer drain_timer_;
};

}  // namespace bankworker::worker
