#pragma once
// Reconciliation as a runtime built-in (issue #19): the reconcile.match job handler, the scheduled
// pass that brings overdue payouts to `missing`, and the gauge of open payouts by status. The
// rules and every statement are the ledger's (ledger/reconcile.hpp); this file only wires them to
// the dispatcher, the scheduler and the database gauges.

#include <chrono>
#include <string_view>

#include "db/keys.hpp"
#include "db/pool.hpp"
#include "ledger/reconcile.hpp"
#include "service/job.hpp"
#include "service/metrics.hpp"
#include "service/provider.hpp"
#include "worker/database_gauges.hpp"
#include "worker/dispatcher.hpp"
#include "worker/scheduler.hpp"

namespace bankworker::worker {

inline constexpr std::string_view reconcile_match_kind = "reconcile.match";
inline constexpr std::string_view reconcile_overdue_task = "reconcile.overdue";
inline constexpr std::chrono::milliseconds reconcile_overdue_interval{3'600'000};

// Runs one reconciliation of the job's tenant and completes the job in the same transaction, so a
// crash loses nothing (the job runs again) and doubles nothing (the run is idempotent). Both
// references outlive the dispatcher.
service::job_handler reconcile_match_handler(db::pool& connections, const db::key_store& keys,
                                             ledger::match_rules rules = {});

// The scheduled pass: every hour, one process enqueues reconcile.match for each tenant with a
// payout past its window; the job marks it `missing`.
service::scheduled_task reconcile_overdue_task_of(db::pool& connections);

// bankworker_reconcile_payouts{status} for each open status, from start-up at zero.
service::database_gauge reconcile_gauge(service::metrics_registry& metrics);

// Adds the three to the runtime's parts (run_service calls it once).
void add_reconciliation(dispatcher& jobs, scheduler& periodic, database_gauges& gauges, db::pool& connections,
                        const db::key_store& keys, service::metrics_registry& metrics);

}  // namespace bankworker::worker
