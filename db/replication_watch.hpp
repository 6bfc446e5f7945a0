#pragma once
// Commits that PostgreSQL acknowledged without the synchronous standby (issue #18).
//
// With synchronous replication a COMMIT waits until the standby has flushed it. If that wait is
// cancelled — a cancel request (pg_cancel_backend, a client's PQcancel), or the backend told to
// stop — PostgreSQL has already committed locally and says so only with a WARNING ("canceling wait for
// synchronous replication …", DETAIL "The transaction has already committed locally, but might not
// have been replicated to the standby."); the COMMIT itself succeeds. Should that node then lose
// its primary role and be rewound, the commit is gone. So such a commit is neither done nor
// failed: it is in doubt (STYLE.md §3), and the caller must not answer 2xx or call the job
// complete on its strength. (PostgreSQL 15 does not apply statement_timeout to this wait: it
// disables the timeout before committing, so a commit waits for a vanished standby until one of
// the above ends it; tests/db/replication_watch_pgtest.cpp saw it wait 14 minutes under 500 ms.)
//
// libpqxx 6.4 passes every notice and warning of a connection to its pqxx::errorhandler objects,
// synchronously, while the statement that drew it runs. replication_watch is one: it counts the
// warnings that name a cancelled replication wait, and watched_connection carries one for its
// whole life (the pool opens only these). pool::lease::commit compares the count before and after.
// The match is on PostgreSQL's English text: a server with lc_messages in another language is not
// recognised (the pool's servers run with the cluster default, C).

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include <pqxx/connection>
#include <pqxx/errorhandler>
#include <pqxx/except>

namespace bankworker::db {

// True when `notice` (a notice as libpq formats it: "WARNING:  …\nDETAIL:  …") says the server
// stopped waiting for the synchronous standby after committing locally.
bool says_replication_wait_cancelled(std::string_view notice) noexcept;

// The commit returned, but the server had stopped waiting for the synchronous standby: it landed
// on this server and may not survive a failover. In doubt: look the effect up by its idempotency
// key on the primary there is after the failover; never answer the sender 2xx on its strength.
class replication_in_doubt : public pqxx::in_doubt_error {
 public:
  using pqxx::in_doubt_error::in_doubt_error;
};

class replication_watch final : public pqxx::errorhandler {
 public:
  explicit replication_watch(pqxx::connection_base& connection) : pqxx::errorhandler(connection) {}
  // Counts; returns true so that older handlers (none in the pool) still see the notice.
  bool operator()(const char message[]) noexcept override;
  // Warnings of a cancelled replication wait seen on the connection so far. Read on the thread
  // that uses the connection (the handler runs there too), so it needs no atomic.
  std::uint64_t cancelled_waits() const noexcept { return cancelled_waits_; }

 private:
  std::uint64_t cancelled_waits_ = 0;
};

// A connection that carries its replication_watch from the moment it opens; the watch, a member,
// unregisters before the connection closes.
class watched_connection final : public pqxx::connection {
 public:
  explicit watched_connection(const std::string& options) : pqxx::connection(options), watch_(*this) {}
  std::uint64_t cancelled_waits() const noexcept { return watch_.cancelled_waits(); }
  // A cancel request for this connection's session is on its way (db/commit_watch.hpp): until it
  // is done the session must run nothing else, or the cancel may hit that instead.
  bool cancel_pending() const noexcept { return cancel_pending_.load(std::memory_order_acquire); }
  void set_cancel_pending(bool pending) noexcept { cancel_pending_.store(pending, std::memory_order_release); }

 private:
  replication_watch watch_;
  std::atomic<bool> cancel_pending_{false};
};

}  // namespace bankworker::db
