#include "db/commit_watch.hpp"

#include <exception>

#include "core/assert.hpp"

namespace bankworker::db {

commit_watch::commit_watch(std::chrono::milliseconds limit) : limit_(limit), thread_([this] { run(); }) {
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
  std::list<entry>::iterator at;
  {
    std::lock_guard lock(mutex_);
    at = entries_.insert(entries_.end(), entry{&connection, clock::now() + limit_});
  }
  changed_.notify_all();
  return ticket(*this, at);
}

commit_watch::ticket::~ticket() {
  std::unique_lock lock(watch_->mutex_);
  watch_->changed_.wait(lock, [&] { return !at_->cancelling; });
  watch_->entries_.erase(at_);
}

std::uint64_t commit_watch::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void commit_watch::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // The next to expire (at most one entry per pooled connection: a short list).
    auto next = entries_.end();
    for (auto at = entries_.begin(); at != entries_.end(); ++at) {
      if (!at->cancelling && at->deadline != clock::time_point::max() &&
          (next == entries_.end() || at->deadline < next->deadline)) {
        next = at;
      }
    }
    if (next == entries_.end()) {
      changed_.wait(lock);
      continue;
    }
    if (const clock::time_point deadline = next->deadline; clock::now() < deadline) {
      changed_.wait_until(lock, deadline);  // a copy: the entry may go while this waits
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
    ++cancelled_;
    changed_.notify_all();
  }
}

}  // namespace bankworker::db
