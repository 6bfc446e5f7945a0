#pragma once
// A deadline on COMMIT (issue #18).
//
// With synchronous replication a COMMIT waits until the standby has flushed it, and PostgreSQL 15
// disables statement_timeout before committing (db/replication_watch.hpp). So a commit on a
// primary whose standby is gone waits until something cancels it. In a clean failover that is
// the old primary's shutdown. When that shutdown hangs (seen in `make failover`: pg_auto_failover's
// switchover promoted the standby 10 s in, but the old primary did not stop for two minutes), every
// worker's committing connection hung with it, although the new primary took writes.
//
// commit_watch is the deadline: a commit still running after `limit` (looked at every limit / 4)
// is cancelled (libpq's PQcancel through pqxx::connection_base::cancel_query). A cancelled
// replication wait makes PostgreSQL return the COMMIT with the "canceling wait for synchronous
// replication" warning, so the pool's lease reports the commit in doubt and its connection goes; a
// commit cancelled before it committed fails with query_canceled and rolls back. Either way the
// caller is free and reconnects through the URL. A cancel that arrives after the commit finished
// is harmless: the server ignores a cancel for a session that is idle.
//
// PQcancel itself has no timeout: it opens a connection to the server, sends the request and waits
// for the server to close it. A server whose postmaster is hung (the stalled demotion above) may
// accept the TCP connection and never answer, and the cancel waits until the server dies. So each
// cancel runs on a thread of its own that holds the connection object alive (shared ownership),
// the watch goes on watching, and a ticket's end waits for a cancel in flight at most
// cancel_wait; after that the connection is marked cancel_pending() and the pool closes it rather
// than hand it on (a late cancel must not hit some later caller's statement).
//
// A server that never answers the cancel never ends the commit either (seen in `make failover`:
// every worker's webhook intake stuck for two minutes behind a stalled old primary, while their
// jobs, on other connections, went on). So a commit still running cancel_wait after its cancel
// was sent is cut off: the watch shuts the connection's socket down (shutdown(2), from its own
// thread; the descriptor stays open until the connection object goes), libpq's wait ends with the
// connection lost, and the caller gets a commit in doubt, as for any commit whose answer was lost.

#include <chrono>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "db/replication_watch.hpp"

namespace bankworker::db {

class commit_watch {
 public:
  using clock = std::chrono::steady_clock;

  explicit commit_watch(std::chrono::milliseconds limit);
  commit_watch(const commit_watch&) = delete;
  commit_watch& operator=(const commit_watch&) = delete;
  ~commit_watch();

 private:
  struct entry {
    std::shared_ptr<watched_connection> connection;
    clock::time_point deadline;  // when to cancel; then when to cut the connection off
    bool cancelled = false;
    bool cut_off = false;  // its socket was shut down: nothing can reach the session any more
  };

 public:
  // How long a ticket's end waits for its cancel to reach the server before giving up on it.
  static constexpr std::chrono::milliseconds cancel_wait{2'000};

  // Held while one COMMIT runs; its destructor waits (at most cancel_wait) for a cancel sent to it
  // to finish, so a cancel that did finish never reaches the connection's next statement.
  class ticket {
   public:
    ticket(commit_watch& watch, std::list<entry>::iterator at) noexcept : watch_(&watch), at_(at) {}
    ticket(const ticket&) = delete;
    ticket& operator=(const ticket&) = delete;
    ~ticket();

   private:
    commit_watch* watch_;
    std::list<entry>::iterator at_;
  };

  // Starts watching a commit on `connection` (which the caller uses on its own thread meanwhile),
  // cancelled after `limit` (the watch's own unless given; looked at every tick all the same).
  [[nodiscard]] ticket watch(std::shared_ptr<watched_connection> connection,
                             std::optional<std::chrono::milliseconds> limit = std::nullopt);

 private:
  void run();
  // Sends a cancel to `connection` on a thread of its own (mutex_ held by `lock` on entry and exit).
  static void send_cancel(std::unique_lock<std::mutex>& lock, std::shared_ptr<watched_connection> connection);

  const std::chrono::milliseconds limit_;
  // How often the watch looks for commits past their deadline: a quarter of the limit, so a hung
  // commit is cancelled between limit and 1.25 x limit after it began.
  const std::chrono::milliseconds tick_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::list<entry> entries_;  // guarded by mutex_; one per commit running now
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the members it reads
};

}  // namespace bankworker::db
