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
// is cancelled (libpq's PQcancel through pqxx::connection_base::cancel_query, from the watch's own
// thread, which is what that call is for). A cancelled replication wait makes PostgreSQL return
// the COMMIT with the "canceling wait for synchronous replication" warning, so the pool's lease
// reports the commit in doubt and its connection goes; a commit cancelled before it committed
// fails with query_canceled and rolls back. Either way the caller is free and reconnects through
// the URL. A cancel that arrives after the commit finished is harmless: the server ignores a
// cancel for a session that is idle.

#include <chrono>
#include <condition_variable>
#include <list>
#include <mutex>
#include <thread>

#include <pqxx/connection>

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
    pqxx::connection_base* connection;
    clock::time_point deadline;
    bool cancelling = false;  // the watch thread is sending the cancel now
  };

 public:
  // Held while one COMMIT runs; its destructor waits for a cancel being sent to finish, so the
  // connection is never touched by the watch after the commit returned.
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

  // Starts watching a commit on `connection` (which the caller uses on its own thread meanwhile).
  [[nodiscard]] ticket watch(pqxx::connection_base& connection);

 private:
  void run();

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
