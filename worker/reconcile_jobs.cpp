#include "worker/reconcile_jobs.hpp"

#include <array>
#include <atomic>
#include <memory>

#include "db/tenant_scope.hpp"

namespace bankworker::worker {

namespace asio = boost::asio;

namespace {

// The coroutine behind the handler: parameters by value, references to objects that outlive the
// dispatcher (STYLE.md §7).
asio::awaitable<queue::outcome> run_match(db::pool& connections, const db::key_store& keys, ledger::match_rules rules,
                                          queue::job job, service::job_context context) {
  co_await context.run_db([&] {
    db::with_tenant(connections, job.ref.tenant, [&](pqxx::work& tx) {
      ledger::reconcile_tenant(tx, keys, job.ref.tenant, rules, std::nullopt, "worker");
      service::complete_in_or_throw(tx, context, job, queue::outcome::done());
    });
  });
  context.mark_completed();
  co_return queue::outcome::done();
}

struct open_counts {
  std::array<std::atomic<std::int64_t>, std::size(ledger::open_payout_statuses)> payouts{};
};

}  // namespace

service::job_handler reconcile_match_handler(db::pool& connections, const db::key_store& keys,
                                             ledger::match_rules rules) {
  return [&connections, &keys, rules](queue::job job, service::job_context context) {
    return run_match(connections, keys, rules, std::move(job), context);
  };
}

service::scheduled_task reconcile_overdue_task_of(db::pool& connections) {
  return {std::string(reconcile_overdue_task), reconcile_overdue_interval,
          [&connections](const std::optional<std::string>& now) {
            auto lease = connections.checkout();
            pqxx::work tx(lease.connection(), "bankworker_reconcile_overdue");
            ledger::schedule_overdue_payouts(tx, now);
            lease.commit(tx);
            return false;
          }};
}

service::database_gauge reconcile_gauge(service::metrics_registry& metrics) {
  // Shared with the registry's readers, which live as long as the registry.
  auto counts = std::make_shared<open_counts>();
  for (std::size_t i = 0; i < std::size(ledger::open_payout_statuses); ++i) {
    metrics.add_gauge("bankworker_reconcile_payouts",
                      "Payouts not settled by reconciliation, by status (missing: no deposit within the window).",
                      {{"status", std::string(ledger::open_payout_statuses[i])}},
                      [counts, i] { return counts->payouts[i].load(std::memory_order_relaxed); });
  }
  return {ledger::reconcile_gauges_sql, [counts](const pqxx::result& rows) {
            std::array<std::int64_t, std::size(ledger::open_payout_statuses)> seen{};
            for (const auto& row : rows) {
              const std::string status = row[0].as<std::string>();
              for (std::size_t i = 0; i < seen.size(); ++i) {
                if (ledger::open_payout_statuses[i] == status) seen[i] = row[1].as<std::int64_t>();
              }
            }
            for (std::size_t i = 0; i < seen.size(); ++i) counts->payouts[i].store(seen[i], std::memory_order_relaxed);
          }};
}

void add_reconciliation(dispatcher& jobs, scheduler& periodic, database_gauges& gauges, db::pool& connections,
                        const db::key_store& keys, service::metrics_registry& metrics) {
  jobs.add_handler(std::string(reconcile_match_kind), reconcile_match_handler(connections, keys));
  periodic.add_task(reconcile_overdue_task_of(connections));
  gauges.add_gauge(reconcile_gauge(metrics));
}

}  // namespace bankworker::worker
