#include "db/pool.hpp"

#include <poll.h>
#include <sodium.h>

#include <algorithm>
#include <utility>


#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "core/limits.hpp"
#include "db/connect.hpp"
#include "db/connection_problem.hpp"

namespace bankworker::db {

namespace {

// The last two columns say whether the server can take writes: a standby (in recovery) or a
// read-only server is refused at connect, whatever the URL's target_session_attrs.
constexpr const char* set_session_sql =
    "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false),"
    " set_config('idle_in_transaction_session_timeout', $3, false), set_config('application_name', $4, false),"
    " pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('default_transaction_read_only')::boolean";
// set_config('role', …) is SET ROLE with the role name as a parameter rather than spliced text.
constexpr const char* set_role_sql = "SELECT set_config('role', $1, false)";
constexpr const char* set_tenant_sql = "SELECT set_config('bankworker.tenant_id', $1, true)";

std::string milliseconds_text(std::chrono::milliseconds value) { return std::to_string(value.count()); }

const pool_settings& checked(const pool_settings& settings) {
  if (settings.connections == 0 || settings.connections > limits::db_connections_max) {
    throw pool_settings_error("pool connections must be 1.." + std::to_string(limits::db_connections_max));
  }
  if (settings.connect_timeout.count() <= 0 || settings.connect_timeout > limits::db_checkout_timeout_max) {
    throw pool_settings_error("pool connect_timeout out of range (db_checkout_timeout_max)");
  }
  if (settings.checkout_timeout.count() <= 0 || settings.checkout_timeout > limits::db_checkout_timeout_max) {
    throw pool_settings_error("pool checkout_timeout out of range (db_checkout_timeout_max)");
  }
  const auto in_range = [](std::chrono::milliseconds value) {
    return value.count() > 0 && value <= limits::db_statement_timeout_max;
  };
  if (!in_range(settings.statement_timeout) || !in_range(settings.lock_timeout) ||
      !in_range(settings.idle_in_transaction_timeout) || !in_range(settings.commit_wait_max)) {
    throw pool_settings_error("pool timeouts must be positive and at most db_statement_timeout_max");
  }
  return settings;
}

}  // namespace

pool::pool(crypto::secret url, pool_settings settings)
    : url_(std::move(url)), settings_(checked(settings)), commits_(settings_.commit_wait_max) {
  slots_.resize(settings_.connections);
}

pool::~pool() = default;

std::shared_ptr<watched_connection> pool::open_connection() {
  // libpqxx wants a std::string; zero that copy of the URL as soon as the connection exists.
  std::string url(url_.reveal().text());
  add_connect_timeout(url, settings_.connect_timeout);
  std::shared_ptr<watched_connection> connection;
  try {
    connection = std::make_shared<watched_connection>(url);
  } catch (...) {
    sodium_memzero(url.data(), url.size());
    throw;
  }
  sodium_memzero(url.data(), url.size());

  pqxx::nontransaction setup(*connection, "bankworker_session_setup");
  const pqxx::row session = setup.exec_params1(set_session_sql, milliseconds_text(settings_.statement_timeout),
                                               milliseconds_text(settings_.lock_timeout),
                                               milliseconds_text(settings_.idle_in_transaction_timeout),
                                               settings_.application_name);
  if (session[4].as<bool>() || session[5].as<bool>()) throw_not_primary(*connection, session[4].as<bool>());
  if (!settings_.role.empty()) setup.exec_params(set_role_sql, settings_.role);
  setup.commit();

  connection->prepare(set_tenant_statement, set_tenant_sql);
  return connection;
}

pool::lease pool::checkout() {
  std::size_t chosen = 0;
  {
    std::unique_lock lock(mutex_);
    const auto find_free = [&] {
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (!slots_[i].in_use) {
          chosen = i;
          return true;
        }
      }
      return false;
    };
    const auto wait_started = std::chrono::steady_clock::now();
    const bool found = released_.wait_for(lock, settings_.checkout_timeout, find_free);
    if (settings_.observe_wait) {
      settings_.observe_wait(std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::steady_clock::now() - wait_started));
    }
    if (!found) {
      throw pool_timeout("no database connection free within db_checkout_timeout_ms=" +
                         std::to_string(settings_.checkout_timeout.count()));
    }
    slots_[chosen].in_use = true;
  }

  // The slot is ours now, so opening its connection needs no lock (and must not hold one).
  slot& ours = slots_[chosen];
  bool check = false;
  {
    std::lock_guard lock(mutex_);
    check = ours.suspect || ours.epoch != epoch_;
    if (ours.epoch < retired_below_) ours.connection.reset();  // retired: a new one opens below
  }
  try {
    prepare_slot(ours, check);
  } catch (...) {
    give_back(chosen, true, false);
    throw;
  }
  return lease(*this, chosen, *ours.connection);
}

namespace {

// An idle connection has nothing to read: a readable socket is the server's goodbye (a FATAL
// "terminating connection" before it closed, or the close itself: a failover, a restart). One
// poll(), no round trip, so it runs at every checkout.
bool idle_socket_readable(const pqxx::connection& connection) noexcept {
  const int fd = connection.sock();
  if (fd < 0) return true;
  pollfd entry{fd, POLLIN, 0};
  return ::poll(&entry, 1, 0) != 0;
}

}  // namespace

void pool::prepare_slot(slot& ours, bool check) {
  if (ours.connection && ours.connection->is_open() && (check || idle_socket_readable(*ours.connection))) {
    // After an error, or opened before the database was last away: is it still a writable
    // primary? A failed check only means this connection goes; a new one is opened below. The
    // check may meet a server that answers nothing (an old primary whose demotion stalled: seen
    // in `make failover`, webhook intake stuck in this check for two minutes), so it runs under
    // the commit watch with connect_timeout as its limit: cancelled, then cut off.
    try {
      const commit_watch::ticket deadline = commits_.watch(ours.connection, settings_.connect_timeout);
      require_primary(*ours.connection);
      std::lock_guard lock(mutex_);
      ours.suspect = false;
      ours.epoch = epoch_;
      return;
    } catch (const std::exception&) {
      ours.connection.reset();
    }
  }
  if (ours.connection && ours.connection->is_open()) return;
  std::uint64_t epoch = 0;
  {
    std::lock_guard lock(mutex_);
    epoch = epoch_;
  }
  try {
    ours.connection.reset();
    ours.connection = open_connection();
  } catch (const std::exception& error) {
    if (is_connection_problem(error)) mark_unavailable(error);
    throw;
  }
  mark_available();
  std::lock_guard lock(mutex_);
  ours.suspect = false;
  ours.epoch = std::max(epoch, epoch_);
}

void pool::mark_unavailable(const std::exception& why) {
  const std::string reason = problem_summary(why);
  {
    std::lock_guard lock(mutex_);
    unavailable_reason_ = reason;
    if (!available_) return;
    available_ = false;
    ++epoch_;
    unavailable_since_ = std::chrono::steady_clock::now();
  }
  if (settings_.on_availability) settings_.on_availability(false, reason, std::chrono::milliseconds(0));
}

void pool::mark_available() {
  std::chrono::milliseconds away{0};
  {
    std::lock_guard lock(mutex_);
    if (available_) return;
    available_ = true;
    away = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - unavailable_since_);
    unavailable_reason_.clear();
  }
  if (settings_.on_availability) settings_.on_availability(true, {}, away);
}

std::optional<std::string> pool::unavailable_reason() const {
  std::lock_guard lock(mutex_);
  if (available_) return std::nullopt;
  return unavailable_reason_;
}

std::size_t pool::in_use() const {
  std::lock_guard lock(mutex_);
  std::size_t count = 0;
  for (const slot& s : slots_) count += s.in_use ? 1 : 0;
  return count;
}

void pool::give_back(std::size_t index, bool discard, bool suspect) noexcept {
  std::shared_ptr<watched_connection> closing;
  {
    std::lock_guard lock(mutex_);
    BW_ASSERT(index < slots_.size());
    BW_ASSERT(slots_[index].in_use);
    const std::shared_ptr<watched_connection>& connection = slots_[index].connection;
    if (connection && connection->cancel_pending()) {
      // A cancel still on its way to a server that did not answer it (db/commit_watch.hpp): that
      // server is hung, and the cancel could hit this connection's next statement.
      discard = true;
      ++epoch_;
      retired_below_ = epoch_;
    }
    if (discard) closing = std::move(slots_[index].connection);
    slots_[index].suspect = slots_[index].suspect || suspect;
    slots_[index].in_use = false;
  }
  released_.notify_one();
  // `closing` disconnects here, outside the lock.
}

pool::lease::lease(lease&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      slot_(other.slot_),
      connection_(other.connection_),
      discard_(other.discard_),
      exceptions_at_checkout_(other.exceptions_at_checkout_),
      cancelled_waits_at_checkout_(other.cancelled_waits_at_checkout_) {}

void pool::retire_open_connections() noexcept {
  std::lock_guard lock(mutex_);
  ++epoch_;
  retired_below_ = epoch_;
}

commit_watch::ticket pool::lease::watch_autocommit() {
  BW_ASSERT(owner_ != nullptr);
  return owner_->commits_.watch(owner_->slots_[slot_].connection);  // the slot is ours while leased
}

void pool::lease::leave_server() noexcept {
  // The connection goes, and the others open to that server: it lost its synchronous standby or
  // is being demoted, and a commit on any of them would wait (or be in doubt) the same way.
  discard();
  owner_->retire_open_connections();
}

void pool::lease::commit(pqxx::transaction_base& tx) {
  BW_ASSERT(&tx.conn() == connection_);
  try {
    const commit_watch::ticket deadline = watch_autocommit();
    tx.commit();
  } catch (const pqxx::sql_error& error) {
    // Cancelled (by the commit watch, or an operator) before it committed: it rolled back, but the
    // server is one whose commits hang, so the caller gets what a hung commit means.
    if (error.sqlstate() != "57014") throw;
    leave_server();
    throw replication_in_doubt("commit cancelled after waiting longer than commit_wait_max; the server may have "
                               "lost its synchronous standby");
  }
  if (connection_->cancelled_waits() != cancelled_waits_at_checkout_) {
    leave_server();
    throw replication_in_doubt(
        "commit in doubt: the server stopped waiting for the synchronous standby after committing locally; the "
        "commit may be lost in a failover");
  }
}

pool::lease::~lease() {
  if (owner_ != nullptr) owner_->give_back(slot_, discard_, std::uncaught_exceptions() > exceptions_at_checkout_);
}

}  // namespace bankworker::db
