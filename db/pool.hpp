#pragma once
// A fixed-size pool of PostgreSQL connections.
//
// Every connection is set up the same way when it opens: statement_timeout, lock_timeout and
// idle_in_transaction_session_timeout (STYLE.md §6), the runtime role (bankworker_worker by
// default, so row-level security applies even when the login role could bypass it), and the
// tenant-scope statement. Other statements are prepared at their first use on a connection
// (db/statement.hpp). Checkout waits at most checkout_timeout. Connections open lazily and a
// broken one is replaced at its next checkout.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "crypto/secret.hpp"

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
  // SET ROLE after connecting; empty keeps the login role (migrations and tests of the owner).
  std::string role = "bankworker_worker";
  std::string application_name = "bankworker";
  // Called after each checkout's wait for a free connection (also when the wait timed out), with
  // how long it waited; for the pool wait histogram. Runs on the caller's thread under the pool's
  // lock: it must only record (an atomic add), never block or call back into the pool.
  std::function<void(std::chrono::microseconds waited)> observe_wait;
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

   private:
    friend class pool;
    lease(pool& owner, std::size_t slot, pqxx::connection& connection) noexcept
        : owner_(&owner), slot_(slot), connection_(&connection) {}
    pool* owner_;
    std::size_t slot_;
    pqxx::connection* connection_;
    bool discard_ = false;
  };

  // Waits up to checkout_timeout for a free connection, opening it if needed. Throws pool_timeout,
  // or pqxx::broken_connection when the database cannot be reached.
  lease checkout();

  const pool_settings& settings() const noexcept { return settings_; }
  // Connections checked out right now (for the pool gauge in /metrics).
  std::size_t in_use() const;

 private:
  struct slot {
    std::unique_ptr<pqxx::connection> connection;
    bool in_use = false;
  };

  std::unique_ptr<pqxx::connection> open_connection() const;
  void give_back(std::size_t slot, bool discard) noexcept;

  const crypto::secret url_;
  const pool_settings settings_;
  mutable std::mutex mutex_;
  std::condition_variable released_;
  std::vector<slot> slots_;  // fixed size; guarded by mutex_
};

}  // namespace bankworker::db
