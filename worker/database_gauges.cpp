#include "worker/database_gauges.hpp"

#include <stdexcept>

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "queue/queue.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::worker {

using service::logger;
using service::metrics_registry;

namespace {

constexpr std::string_view jobs_name = "bankworker_jobs";
constexpr std::string_view jobs_help =
    "Jobs in the queue by kind and state, read from the database every few seconds: available (due now), "
    "scheduled (waiting for their run_at), running, retryable (a due retry), dead (no attempt left; kept for "
    "dead_retention).";
constexpr std::string_view oldest_name = "bankworker_jobs_oldest_available_age_seconds";
constexpr std::string_view oldest_help =
    "Seconds the oldest due job of a kind (available or retryable, not running) has waited (0: none).";

template <std::size_t N>
std::ptrdiff_t state_index(const std::string_view (&states)[N], std::string_view state) {
  for (std::size_t i = 0; i < N; ++i) {
    if (states[i] == state) return static_cast<std::ptrdiff_t>(i);
  }
  return -1;
}

}  // namespace

database_gauges::database_gauges(boost::asio::io_context& io, boost::asio::thread_pool& blocking,
                                 db::pool& connections, metrics_registry& metrics, logger& log,
                                 const std::vector<std::string>& kinds, database_gauge_settings settings)
    : blocking_(blocking),
      connections_(connections),
      metrics_(metrics),
      log_(log),
      settings_(settings),
      strand_(boost::asio::make_strand(io)),
      timer_(strand_) {
  if (settings_.refresh_interval < database_gauge_refresh_interval_min ||
      settings_.refresh_interval > database_gauge_refresh_interval_max) {
    throw std::invalid_argument("database_gauge_settings.refresh_interval is outside its bounds");
  }
  for (const std::string& kind : kinds) series_for(kind);
  metrics_.add_gauge("bankworker_database_up",
                     "1 when this process's last read of the database gauges reached the database, else 0.", {},
                     [this] { return database_up_.load(std::memory_order_relaxed); });
  for (std::size_t i = 0; i < std::size(queue::worker_process_states); ++i) {
    metrics_.add_gauge("bankworker_worker_processes",
                       "bankworker run processes by state, read from the database: alive (a heartbeat within three "
                       "heartbeat intervals), silent (older: killed, or cut off from the database), stopped "
                       "(shut down gracefully; kept a day).",
                       {{"state", std::string(queue::worker_process_states[i])}},
                       [value = &processes_[i]] { return value->load(std::memory_order_relaxed); });
  }
}

database_gauges::kind_series* database_gauges::series_for(const std::string& kind) {
  const auto found = kinds_.find(kind);
  if (found != kinds_.end()) return found->second;
  if (kinds_.size() >= database_gauge_kinds_max) return nullptr;
  kind_series* series = &kind_storage_.emplace_back();
  for (std::size_t i = 0; i < std::size(job_gauge_states); ++i) {
    std::atomic<std::int64_t>* value = &series->jobs[i];
    metrics_.add_gauge(jobs_name, jobs_help, {{"kind", kind}, {"state", std::string(job_gauge_states[i])}},
                       [value] { return value->load(std::memory_order_relaxed); });
  }
  metrics_.add_gauge(oldest_name, oldest_help, {{"kind", kind}},
                     [series] { return series->oldest_due_s.load(std::memory_order_relaxed); });
  return kinds_.emplace(kind, series).first->second;
}

void database_gauges::add_gauge(service::database_gauge gauge) {
  BW_ASSERT(gauge.sql != nullptr && gauge.read != nullptr);
  BW_ASSERT(gauges_.size() < database_gauge_statements_max);
  gauges_.push_back(std::move(gauge));
}

void database_gauges::add_heartbeat(queue::worker_process_record& process,
                                    std::chrono::steady_clock::time_point registered_at) {
  heartbeat_ = &process;
  last_beat_ = registered_at;
}

void database_gauges::beat_if_due() {
  if (heartbeat_ == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_beat_ < heartbeat_->identity().heartbeat_interval) return;
  heartbeat_->beat();
  last_beat_ = now;
}

void database_gauges::read_database() {
  pqxx::result job_rows;
  pqxx::result process_rows;
  std::vector<pqxx::result> provider_rows(gauges_.size());
  {
    db::pool::lease lease = connections_.checkout();
    pqxx::nontransaction tx(lease.connection(), "bankworker_database_gauges");
    // One round trip: the pipeline sends every statement together and reads the answers.
    pqxx::pipeline pipe(tx);
    const auto jobs_query = pipe.insert(queue::job_gauges_sql);
    const auto processes_query = pipe.insert(queue::worker_process_gauges_sql);
    std::vector<pqxx::pipeline::query_id> queries;
    queries.reserve(gauges_.size());
    for (const service::database_gauge& gauge : gauges_) queries.push_back(pipe.insert(gauge.sql));
    job_rows = pipe.retrieve(jobs_query);
    process_rows = pipe.retrieve(processes_query);
    for (std::size_t i = 0; i < queries.size(); ++i) provider_rows[i] = pipe.retrieve(queries[i]);
  }
  BW_ASSERT(job_rows.size() <= queue::job_gauge_rows_max);
  // A (kind, state) missing from the answer has no jobs: it reads zero rather than its old value.
  for (auto& [kind, series] : kinds_) {
    for (auto& value : series->jobs) value.store(0, std::memory_order_relaxed);
    series->oldest_due_s.store(0, std::memory_order_relaxed);
  }
  for (const pqxx::row& row : job_rows) {
    kind_series* series = series_for(row[0].as<std::string>());
    const std::ptrdiff_t state = state_index(job_gauge_states, row[1].as<std::string>());
    if (series == nullptr || state < 0) continue;
    series->jobs[static_cast<std::size_t>(state)].store(row[2].as<std::int64_t>(), std::memory_order_relaxed);
    const std::int64_t oldest_s = row[3].as<std::int64_t>();
    if (oldest_s > series->oldest_due_s.load(std::memory_order_relaxed)) {
      series->oldest_due_s.store(oldest_s, std::memory_order_relaxed);
    }
  }
  std::int64_t processes[std::size(queue::worker_process_states)]{};
  for (const pqxx::row& row : process_rows) {
    const std::ptrdiff_t state = state_index(queue::worker_process_states, row[0].as<std::string>());
    if (state >= 0) processes[static_cast<std::size_t>(state)] = row[1].as<std::int64_t>();
  }
  for (std::size_t i = 0; i < std::size(processes); ++i) processes_[i].store(processes[i], std::memory_order_relaxed);
  for (std::size_t i = 0; i < gauges_.size(); ++i) gauges_[i].read(provider_rows[i]);
}

bool database_gauges::refresh() {
  try {
    beat_if_due();
    read_database();
  } catch (const pqxx::broken_connection&) {
    database_up_.store(0, std::memory_order_relaxed);
    if (was_up_) log_.error("database unreachable; gauges keep their last values until it is back");
    was_up_ = false;
    return false;
  } catch (const db::pool_timeout&) {
    database_up_.store(0, std::memory_order_relaxed);
    if (was_up_) log_.error("database unreachable: no pooled connection free within db_checkout_timeout_ms");
    was_up_ = false;
    return false;
  }
  // Any other failure (a statement refused) is a bug or a schema problem, not an outage: it
  // escapes to run(), which logs it.
  database_up_.store(1, std::memory_order_relaxed);
  if (!was_up_) log_.info("database reachable again");
  was_up_ = true;
  return true;
}

void database_gauges::stop() {
  stopping_ = true;
  boost::asio::post(strand_, [this] { timer_.cancel(); });
}

boost::asio::awaitable<void> database_gauges::run() {
  while (!stopping_) {
    try {
      co_await queue::run_blocking(blocking_, [this] { return refresh(); });
    } catch (const std::exception& error) {
      database_up_.store(0, std::memory_order_relaxed);
      log_.warn("reading the database gauges failed; they keep their last values", {{"error", error.what()}});
    }
    if (stopping_) break;
    timer_.expires_after(settings_.refresh_interval);
    boost::system::error_code cancelled;
    co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, cancelled));
  }
}

}  // namespace bankworker::worker
