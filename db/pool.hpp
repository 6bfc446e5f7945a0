#pragma once
// A fixed-size pool of PostgreSQL connections.
//
// Every connection is set up the same way when it opens: statement_timeout, lock_timeout and
// idle_in_transaction_session_timeout (STYLE.md §6), the runtime role (bankworker_worker by
// default, so row-level security applies even when the login role could bypass it), and the
// tenant-scope statement. Other statements are prepared at their first use on a connection
// (db/statement.hpp). Checkout waits at most checkout_timeout. Connections open lazily and a
// broken one is replaced at its next checkout.
//
// Failover (issue #18, db/connection_problem.hpp). A connection whose socket is readable while idle
// (the server said goodbye or closed it) is checked before use too. A connection given back while an exception was
// unwinding is suspect: its next checkout first asks the server whether it is still a writable
// primary (one round trip, only after an error) and replaces it if not, so a pool never keeps
// handing out connections to a demoted server (SQLSTATE 25006 forever) or to a closed socket.
// When a connection cannot be opened the pool marks the database unavailable (once, with the
// reason: settings.on_availability), and every connection opened before that is checked before
// its next use; the first connection opened afterwards marks it available again. Reconnecting
// goes through the URL, so a libpq multi-host URL with target_session_attrs=read-write lands on
// whichever node is the primary now. A server that answers but is in recovery is refused at
// connect (standby_error) whatever the URL says.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "crypto/secret.hpp"
#include "db/commit_watch.hpp"
#include "db/replication_watch.hpp"

namespace bankworker::db {

struct pool_settings {
  std::size_t connections = 4;
  std::chrono::milliseconds checkout_timeout{5'000};
  // libpq's connect_timeout (whole seconds; rounded up), unless the URL sets its own: a database
  // that does not answer must not hold a caller forever.
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds statement_timeout{30'000};
  std::chrono::milliseconds lock_timeout{10'000};
  std::chrono::milliseconds idle_in_transaction_timeout{60'000};
  // A COMMIT through lease::commit still running after this is cancelled (db/commit_watch.hpp):
  // with synchronous replication, a commit waiting for a standby that is gone (PostgreSQL does not
  // apply statement_timeout to that wait). It is then in doubt, and every connection the pool had
  // open to that server is closed rather than reused.
  std::chrono::milliseconds commit_wait_max{10'000};
  // SET ROLE after connecting; empty keeps the login role (migrations and tests of the owner).
  std::string role = "bankworker_worker";
  std::string application_name = "bankworker";
  // Called after each checkout's wait for a free connection (also when the wait timed out), with
  // how long it waited; for the pool wait histogram. Runs on the caller's thread under the pool's
  // lock: it must only record (an atomic add), never block or call back into the pool.
  std::function<void(std::chrono::microseconds waited)> observe_wait;
  // Called when the database becomes unavailable (`available` false, with why, one line) and when
  // it is available again (with how long it was away), once per transition, outside the pool's
  // lock, on the thread that noticed. For the "database gone / back" log lines.
  std::function<void(bool available, const std::string& why, std::chrono::milliseconds away)> on_availability;
};

// No connection became free within checkout_timeout: the database is overloaded or the pool is
// too small. Retry later; never block without bound.
class pool_timeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The settings make no sense (zero connections, a timeout out of range). A programming or
// configuration error: fix the caller.
class pool_settings_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The statement every tenant-scoped transaction starts with (see tenant_scope.hpp).
inline constexpr const char* set_tenant_statement = "bankworker_set_tenant";

class pool {
 public:
  // `url` is a libpq connection URI or key=value string; it may hold a password, so it is a secret.
  pool(crypto::secret url, pool_settings settings);
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  ~pool();

  class lease {
   public:
    lease(lease&& other) noexcept;
    lease& operator=(lease&&) = delete;
    lease(const lease&) = delete;
    ~lease();

    pqxx::connection& connection() noexcept { return *connection_; }
    // The connection is unusable (broken, or a transaction's outcome is in doubt): close it
    // instead of handing it to the next caller.
    void discard() noexcept { discard_ = true; }
    // Commits `tx` (a transaction on this lease's connection; for a nontransaction, whose
    // statements committed as they ran, only the check) and throws replication_in_doubt when the
    // server cancelled a wait for the synchronous standby at any point since checkout: the commit
    // landed here but may be lost in a failover. Every write whose success someone acts on (a 2xx,
    // a job's completion) commits through this, not tx.commit().
    void commit(pqxx::transaction_base& tx);
    // For writes in autocommit (a nontransaction): each statement commits as it ends and, with
    // synchronous replication, waits for the standby there, where statement_timeout does not
    // apply. Hold the returned ticket while they run: one still running after commit_wait_max is
    // cancelled (db/commit_watch.hpp), and commit(tx) then reports it in doubt.
    [[nodiscard]] commit_watch::ticket watch_autocommit();

   private:
    friend class pool;
    // After a commit in doubt: this connection and every other one the pool had open go.
    void leave_server() noexcept;
    lease(pool& owner, std::size_t slot, watched_connection& connection) noexcept
        : owner_(&owner),
          slot_(slot),
          connection_(&connection),
          exceptions_at_checkout_(std::uncaught_exceptions()),
          cancelled_waits_at_checkout_(connection.cancelled_waits()) {}
    pool* owner_;
    std::size_t slot_;
    watched_connection* connection_;
    bool discard_ = false;
    // More exceptions in flight at give-back than at checkout: an error escaped while the
    // connection was in use, and the connection is checked before its next use.
    int exceptions_at_checkout_ = 0;
    std::uint64_t cancelled_waits_at_checkout_ = 0;
  };

  // Waits up to checkout_timeout for a free connection, opening it if needed. Throws pool_timeout,
  // or pqxx::broken_connection when the database cannot be reached.
  lease checkout();

  // Why the database is unavailable (the last failure to connect, one line), or nothing while it
  // is available. For /readyz.
  std::optional<std::string> unavailable_reason() const;

  const pool_settings& settings() const noexcept { return settings_; }
  // Connections checked out right now (for the pool gauge in /metrics).
  std::size_t in_use() const;

 private:
  struct slot {
    std::shared_ptr<watched_connection> connection;  // shared only with a cancel in flight (commit_watch)
    bool in_use = false;
    bool suspect = false;       // given back during an exception: check before the next use
    std::uint64_t epoch = 0;    // the pool's epoch when it opened; older ones are checked too
  };
  // A commit in doubt: connections opened before now are closed at their next checkout (the
  // server they reach lost its standby or is being demoted, and may hold their commits too).
  void retire_open_connections() noexcept;

  std::shared_ptr<watched_connection> open_connection();
  // Opens, or checks and if need be reopens, the connection of a slot the caller holds.
  void prepare_slot(slot& ours, bool check);
  void give_back(std::size_t slot, bool discard, bool suspect) noexcept;
  void mark_unavailable(const std::exception& why);
  void mark_available();

  const crypto::secret url_;
  const pool_settings settings_;
  mutable std::mutex mutex_;
  std::condition_variable released_;
  std::vector<slot> slots_;  // fixed size; guarded by mutex_
  // Availability, guarded by mutex_: bumped at each transition to unavailable.
  std::uint64_t epoch_ = 0;
  // Connections of an epoch below this are closed, not checked (retire_open_connections).
  std::uint64_t retired_below_ = 0;
  bool available_ = true;
  std::string unavailable_reason_;
  std::chrono::steady_clock::time_point unavailable_since_{};
  commit_watch commits_;  // last: its thread stops first
};

}  // namespace bankworker::db
