#include "db/commit_watch.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <exception>
#include <system_error>
#include <utility>

#include "core/assert.hpp"

namespace bankworker::db {

namespace {

// How often a ticket whose cancel is in flight looks whether it is done.
constexpr std::chrono::milliseconds cancel_poll{5};

}  // namespace

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

commit_watch::ticket commit_watch::watch(std::shared_ptr<watched_connection> connection,
                                         std::optional<std::chrono::milliseconds> limit) {
  BW_ASSERT(connection != nullptr);
  // No wake-up: the watch looks every tick_ (a commit costs a list insert, not a context switch).
  std::lock_guard lock(mutex_);
  const auto deadline = clock::now() + limit.value_or(limit_);
  return ticket(*this, entries_.insert(entries_.end(), entry{std::move(connection), deadline}));
}

commit_watch::ticket::~ticket() {
  std::shared_ptr<watched_connection> connection;
  bool cut_off = false;
  {
    std::lock_guard lock(watch_->mutex_);
    connection = std::move(at_->connection);
    cut_off = at_->cut_off;
    watch_->entries_.erase(at_);
  }
  // A cancel sent to this commit: give it cancel_wait to reach the server (unless the connection
  // was cut off, which no late cancel can harm). One still on its way after that leaves the
  // connection marked, and the pool closes it instead of reusing it.
  // The wait sleeps: tickets are held by pool users, which run on the DB threads or threads of
  // their own (the pool's checkout blocks too), never on the io_context's.
  if (cut_off) return;
  const auto give_up = clock::now() + cancel_wait;
  while (connection->cancel_pending() && clock::now() < give_up) std::this_thread::sleep_for(cancel_poll);
}

void commit_watch::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // One commit past its deadline (at most one entry per pooled connection: a short list).
    const auto now = clock::now();
    const auto next = std::find_if(entries_.begin(), entries_.end(), [&](const entry& e) { return e.deadline <= now; });
    if (next == entries_.end()) {
      changed_.wait_for(lock, tick_);
      continue;
    }
    if (next->cancelled) {
      // The cancel got no answer within cancel_wait and the commit still runs: the server is hung.
      // Cut the connection off; the blocked call in the committing thread ends with it.
      next->deadline = clock::time_point::max();
      next->cut_off = true;
      ::shutdown(next->connection->sock(), SHUT_RDWR);
      continue;
    }
    next->cancelled = true;
    next->deadline = now + cancel_wait;
    next->connection->set_cancel_pending(true);  // before the ticket could look
    send_cancel(lock, next->connection);
  }
}

void commit_watch::send_cancel(std::unique_lock<std::mutex>& lock, std::shared_ptr<watched_connection> connection) {
  const auto send = [connection = std::move(connection)] {
    try {
      connection->cancel_query();
    } catch (const std::exception&) {
      // The server could not be told (it is gone): the commit ends with the connection instead.
    }
    connection->set_cancel_pending(false);
  };
  // Its own thread, detached: PQcancel may wait for a hung server for as long as it lives, and
  // the thread touches nothing but the connection it co-owns.
  try {
    std::thread(send).detach();
  } catch (const std::system_error&) {
    // No thread to spare: send it from here, as the watch did before it had helpers.
    lock.unlock();
    send();
    lock.lock();
  }
}

}  // namespace bankworker::db
