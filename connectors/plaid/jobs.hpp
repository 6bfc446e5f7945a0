#pragma once
// The Plaid jobs (DESIGN.md §1.1, §1.2, §1.4): plaid.link, plaid.sync and plaid.revoke.
//
// Each handler talks to Plaid through plaid::client (coroutines on the io_context) and to the
// database on the DB thread pool, and records its outcome in the same transaction as its effect
// (complete_in), so a handler whose lease was lost commits nothing.
//
// Plaid's errors become outcomes at the job boundary (issue #5 "Errors → outcomes"), through the
// one mapping in errors.hpp (plan_failure):
//   rate limited                     → retry after Retry-After or rate_limited_retry
//   5xx, network, malformed response → retry with backoff (transient)
//   INSTITUTION_DOWN / NOT_RESPONDING → retry after institution_down_retry
//   ITEM_LOGIN_REQUIRED / ITEM_LOCKED → connection needs_reauth (audited), job needs user action
//   ITEM_NOT_FOUND / USER_PERMISSION_REVOKED → plaid.revoke enqueued, job failed
//   INVALID_ACCESS_TOKEN             → connection broken (audited, logged as an error), data kept
//   INVALID_API_KEYS                 → every Plaid job in this process pauses (retry after
//                                      credentials_pause) until the keys are fixed and reloaded
// Sync restarts from the walk's first cursor on TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION (at
// most sync_restarts_max times per attempt) and from the beginning when Plaid says the cursor is
// not associated with the access token.
//
// Effects that cannot be rolled back: the public-token exchange (single use) and /item/remove.
// Link is made idempotent by linked_by_job (an attempt in doubt looks its connection up first);
// remove is idempotent at Plaid (a removed item answers ITEM_NOT_FOUND, which counts as removed).
//
// Revocation destroys the token only once Plaid confirmed /item/remove or said the item no longer
// exists (ITEM_NOT_FOUND, USER_PERMISSION_REVOKED, INVALID_ACCESS_TOKEN). Any other answer leaves
// the connection 'revoking' (no sync runs) with its token sealed, records the answer as the
// connection's last_error, and retries: after Retry-After or rate_limited_retry when rate limited,
// institution_down_retry when the institution is down, the queue's capped backoff otherwise. After
// the job's last attempt it needs user action (connections revoke, or jobs retry); the connection
// stays 'revoking', counted by bankworker_plaid_connections_revoking and its age.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "connectors/plaid/client.hpp"
#include "connectors/plaid/errors.hpp"
#include "connectors/plaid/sync_buffer.hpp"
#include "db/keys.hpp"
#include "connectors/plaid/store.hpp"
#include "db/pool.hpp"
#include "service/log.hpp"
#include "service/job.hpp"
#include "service/metrics.hpp"

namespace bankworker::plaid {

using service::complete_in_or_throw;
using service::job_context;
using service::job_handler;
using service::lease_lost_error;
using service::logger;
using service::metrics_registry;

inline constexpr std::string_view plaid_link_kind = "plaid.link";
inline constexpr std::string_view plaid_sync_kind = "plaid.sync";
inline constexpr std::string_view plaid_revoke_kind = "plaid.revoke";

struct plaid_job_settings {
  std::string environment = "sandbox";  // sandbox, development, production (bound into the sealed token)
  // Rows one sync may buffer before it applies them (added + modified + removed as received).
  std::size_t sync_rows_max = 250'000;
  std::uint32_t sync_restarts_max = 5;
  std::chrono::seconds periodic_sync_interval{6 * 3600};
  std::chrono::milliseconds rate_limited_retry{30'000};
  std::chrono::milliseconds institution_down_retry{5 * 60'000};
  std::chrono::milliseconds credentials_pause{5 * 60'000};
  // Plaid's /transactions/sync limits (production: 2,500 per minute per client, 50 per item),
  // shared by every worker on the database (db/rate_limits.hpp); 0 turns a limit off.
  std::uint32_t sync_client_per_minute = 2'500;
  std::uint32_t sync_item_per_minute = 50;
  // A wait for the limiter up to this long is slept in the job; a longer one retries the job then.
  std::chrono::milliseconds rate_wait_in_job_max{2'000};
  // After a successful exchange the public token is spent and the access token lives only in the
  // job: a store that fails because the database is unreachable is tried again this many times,
  // this far apart (a restart takes seconds; a failover after a lost primary, measured by make
  // failover, 15 s with scripts/pg-ha and 30+ s with pg_auto_failover's defaults), before the item
  // is given up. The job's lease is renewed meanwhile.
  std::uint32_t link_store_attempts_max = 45;
  std::chrono::milliseconds link_store_retry_delay{1'000};
};

class plaid_jobs {
 public:
  // Everything passed by reference outlives the dispatcher that runs the handlers.
  plaid_jobs(db::pool& connections, db::key_store& keys, plaid::client& plaid, metrics_registry& metrics,
             logger& log, plaid_job_settings settings);

  job_handler link_handler();
  job_handler sync_handler();
  job_handler revoke_handler();

  // Plaid refused our API keys; Plaid jobs wait until resume() (SIGHUP after fixing the keys).
  bool paused() const noexcept { return paused_.load(); }
  void resume() noexcept { paused_.store(false); }

 private:
  // The connection and its opened token, read at the start of a sync or a revocation.
  struct loaded_connection {
    std::optional<plaid_connection> row;
    crypto::secret token;
  };
  // What a sync's walk over /transactions/sync ended with.
  struct sync_walk {
    std::string stored_cursor;  // the connection's cursor when the walk began
    std::string cursor;         // the last page's next_cursor
    bool cursor_reset = false;  // Plaid disowned the stored cursor: walked from the beginning
    std::uint32_t restarts = 0;
    plaid::sync_changes changes;
    std::vector<db::external_call> calls;
    std::optional<plaid::error> failure;   // the walk ended in this Plaid error
    std::optional<queue::outcome> stopped;  // the walk stopped before Plaid answered (lease, limiter)
  };

  boost::asio::awaitable<queue::outcome> link(queue::job job, job_context context);
  boost::asio::awaitable<queue::outcome> store_link(queue::job job, job_context context, plaid::exchange_result linked,
                                                    std::vector<db::external_call> calls);
  core::uuid store_connection(const queue::job& job, const job_context& context, const plaid::exchange_result& linked,
                              const core::uuid& secret_id, const std::vector<db::external_call>& calls);

  boost::asio::awaitable<queue::outcome> sync(queue::job job, job_context context);
  boost::asio::awaitable<sync_walk> walk_pages(const queue::job& job, const job_context& context, core::uuid connection,
                                               const crypto::secret& token, std::string stored_cursor);
  boost::asio::awaitable<queue::outcome> apply_walk(queue::job job, job_context context, core::uuid connection,
                                                    plaid_connection start, sync_walk walk);
  // What an apply did with the quarantine, counted once it committed.
  struct quarantine_counts {
    std::size_t quarantined = 0;  // rows stored in (or replaced in) bankworker.plaid_quarantine
    std::size_t released = 0;     // quarantined rows applied because their currency is known now
  };
  queue::outcome apply_in(pqxx::work& tx, const queue::job& job, const job_context& context,
                          const core::uuid& connection, const sync_walk& walk, bool first_sync,
                          quarantine_counts& counted);
  // The walk's changes plus the quarantined rows of the connection that apply now, and the walk's
  // own set-aside rows whose currency was declared after this process read its table; nothing
  // when none does (the walk's changes are used as they are).
  std::optional<plaid::sync_changes> with_released(pqxx::work& tx, const core::uuid& tenant,
                                                   const core::uuid& connection, const sync_walk& walk,
                                                   bool synced_before, quarantine_counts& counted);

  boost::asio::awaitable<queue::outcome> revoke(queue::job job, job_context context);
  loaded_connection begin_revoke(pqxx::work& tx, const queue::job& job, const job_context& context,
                                 const core::uuid& connection);

  // Every Plaid error of every job ends here (errors.hpp: plan_failure says what it means).
  boost::asio::awaitable<queue::outcome> finish_failure(queue::job job, job_context context,
                                                        std::optional<core::uuid> connection, plaid::error failure,
                                                        plaid_call call, std::vector<db::external_call> calls);
  void apply_failure_plan(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                          const plaid::error& failure, plaid_call call, const failure_plan& plan);
  void log_failure(const queue::job& job, const std::optional<core::uuid>& connection, const plaid::error& failure,
                   plaid_call call, const failure_plan& plan);
  plaid::failure_delays delays() const;
  crypto::secret open_token(pqxx::work& tx, const core::uuid& tenant, const plaid_connection& row);

  // Takes a /transactions/sync token for the connection from the shared limiter: nothing when the
  // call may go now, or the delay after which the job should run again.
  boost::asio::awaitable<std::optional<std::chrono::milliseconds>> wait_for_sync_token(const core::uuid& connection,
                                                                                       const job_context& context);
  void count_call(const plaid::call_record& call, std::string_view outcome);

  db::pool& connections_;
  db::key_store& keys_;
  plaid::client& plaid_;
  metrics_registry& metrics_;
  logger& log_;
  const plaid_job_settings settings_;
  std::atomic<bool> paused_{false};
  metrics_registry::counter* rows_added_;
  metrics_registry::counter* rows_modified_;
  metrics_registry::counter* rows_removed_;
  metrics_registry::counter* rows_quarantined_;
  metrics_registry::counter* rows_released_;
};

}  // namespace bankworker::plaid
