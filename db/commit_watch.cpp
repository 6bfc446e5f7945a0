#include "db/commit_watch.hpp"

#include <algorithm>
#include <exception>

#include "core/assert.hpp"

namespace bankworker::db {

commit_watch::commit_watch(std::chrono::milliseconds limit)
    : limit_(limit), tick_(std::max(limit / 4, std::chrono::milliseconds(1))), thread_([this] { run(); }) {
  BW_ASSERT(limit.count() > 0);
}

commit_watch::~commit_watch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

commit_watch::ticket commit_watch::watch(pqxx::connection_base& connection) {
  // No wake-up: the watch looks every tick_ (a commit costs a list insert, not a context switch).
  std::lock_guard lock(mutex_);
  return ticket(*this, entries_.insert(entries_.end(), entry{&connection, clock::now() + limit_}));
}

commit_watch::ticket::~ticket() {
  std::unique_lock lock(watch_->mutex_);
  watch_->changed_.wait(lock, [&] { return !at_->cancelling; });
  watch_->entries_.erase(at_);
}

void commit_watch::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // One commit past its deadline (at most one entry per pooled connection: a short list).
    const auto now = clock::now();
    const auto next = std::find_if(entries_.begin(), entries_.end(),
                                   [&](const entry& e) { return !e.cancelling && e.deadline <= now; });
    if (next == entries_.end()) {
      changed_.wait_for(lock, tick_);
      continue;
    }
    next->cancelling = true;
    pqxx::connection_base* connection = next->connection;
    lock.unlock();
    try {
      connection->cancel_query();
    } catch (const std::exception&) {
      // The server could not be told (it is gone): the commit ends with the connection instead.
    }
    lock.lock();
    next->cancelling = false;
    next->deadline = clock::time_point::max();  // cancelled once; never again
    changed_.notify_all();
  }
}

}  // namespace bankworker::db
