#pragma once
// A job handler as the runtime runs it: what a handler may use while it runs (its job_context),
// how it records its outcome in the transaction of its effect, and the handler's signature. The
// dispatcher that claims jobs and calls handlers is the runtime's (worker/dispatcher.hpp);
// providers write handlers against these types only.

#include <atomic>
#include <functional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "queue/job.hpp"
#include "queue/queue.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::service {

// What a handler may use while it runs. Valid until the handler's coroutine returns.
class job_context {
 public:
  job_context(queue::job_queue& jobs, boost::asio::thread_pool& blocking, const core::uuid& owner,
              const std::atomic<bool>& lease_lost, bool& completed_by_handler)
      : jobs_(&jobs), blocking_(&blocking), owner_(&owner), lease_lost_(&lease_lost),
        completed_by_handler_(&completed_by_handler) {}

  queue::job_queue& jobs() const noexcept { return *jobs_; }
  const core::uuid& owner() const noexcept { return *owner_; }
  // A checkpoint: the job was cancelled, or its lease expired and it was rescued. Stop, commit nothing.
  bool lease_lost() const noexcept { return lease_lost_->load(); }
  // Blocking database work on the DB thread pool.
  template <class Work>
  boost::asio::awaitable<std::invoke_result_t<Work&>> run_db(Work work) const {
    return queue::run_blocking(*blocking_, std::move(work));
  }
  // The handler recorded its outcome itself with complete_in(), in the transaction of its effect;
  // the dispatcher must not record another.
  void mark_completed() const noexcept { *completed_by_handler_ = true; }

 private:
  queue::job_queue* jobs_;
  boost::asio::thread_pool* blocking_;
  const core::uuid* owner_;
  const std::atomic<bool>* lease_lost_;
  bool* completed_by_handler_;
};

// Thrown inside a handler's transaction when complete_in() finds that the lease was lost (the job
// was cancelled or rescued): the transaction rolls back, so the effect does not commit.
class lease_lost_error : public std::runtime_error {
 public:
  lease_lost_error() : std::runtime_error("lease lost before the effect committed") {}
};

// Records `result` for `job` inside `tx`, the transaction that holds the handler's effect, or
// throws lease_lost_error. The handler then calls context.mark_completed() once `tx` committed.
void complete_in_or_throw(pqxx::transaction_base& tx, const job_context& context, const queue::job& job,
                          const queue::outcome& result);

// A handler gets the job and its context by value (coroutine parameters, STYLE.md §7) and returns
// the outcome. An exception escaping it is classified at the job boundary (dispatcher.cpp).
using job_handler = std::function<boost::asio::awaitable<queue::outcome>(queue::job, job_context)>;

}  // namespace bankworker::service
