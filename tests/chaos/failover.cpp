#include "tests/chaos/failover.hpp"

#include <algorithm>

#include <pqxx/pqxx>

#include "db/replication_watch.hpp"

#include "tests/sim/stripe/simulator.hpp"
#include "tests/support/http_client.hpp"

namespace bankworker::chaos {

write_probe::write_probe(std::string database_url, std::vector<std::string> worker_urls, std::string platform_secret,
                         std::string account, std::chrono::milliseconds interval,
                         std::function<void(const std::string&, const std::string&)> refused,
                         std::function<void(std::size_t)> stalled)
    : database_url_(std::move(database_url)),
      worker_urls_(std::move(worker_urls)),
      platform_secret_(std::move(platform_secret)),
      account_(std::move(account)),
      interval_(interval),
      refused_(std::move(refused)),
      stalled_(std::move(stalled)),
      worker_writes_(worker_urls_.size()) {
  threads_.emplace_back([this] { probe_database(); });
  for (std::size_t i = 0; i < worker_urls_.size(); ++i) threads_.emplace_back([this, i] { probe_worker(i); });
}

write_probe::~write_probe() { stop(); }

void write_probe::stop() {
  stopping_ = true;
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

// A transaction that takes an xid commits a WAL record, so with synchronous replication its
// COMMIT returns only once the standby has it: a write in every sense that matters here. Unless
// the server gave up waiting for the standby (statement_timeout, 2 s here) and committed locally
// with a warning (db/replication_watch.hpp): that is no write the new primary has, so it does not
// count, and its connection goes.
void write_probe::probe_database() {
  std::unique_ptr<db::watched_connection> db;
  while (!stopping_) {
    try {
      if (!db || !db->is_open()) db = std::make_unique<db::watched_connection>(database_url_ + "&connect_timeout=2");
      const std::uint64_t cancelled_before = db->cancelled_waits();
      pqxx::work tx(*db);
      tx.exec("SET LOCAL statement_timeout = 2000");
      // pg_auto_failover fences a node it is promoting with default_transaction_read_only until the
      // old primary is surely gone; txid_current() would still commit there (it is allowed in a
      // read-only transaction, and libpq's read-write check let this session in), but nothing can
      // write. Only a read-write transaction counts (no row: exec1 throws).
      const int port = tx.exec1("SELECT inet_server_port(), txid_current() WHERE NOT pg_is_in_recovery()"
                                " AND current_setting('transaction_read_only') = 'off'")[0].as<int>();
      tx.commit();
      std::lock_guard lock(mutex_);
      if (db->cancelled_waits() == cancelled_before) {
        database_writes_.push_back(probe_clock::now());
        database_ports_.push_back(port);
      } else {
        ++unreplicated_commits_;
        db.reset();
      }
    } catch (const std::exception&) {
      db.reset();
    }
    std::this_thread::sleep_for(interval_);
  }
}

std::optional<int> write_probe::database_port_at(probe_clock::time_point at) const {
  std::lock_guard lock(mutex_);
  const auto found = std::find(database_writes_.begin(), database_writes_.end(), at);
  if (found == database_writes_.end()) return std::nullopt;
  return database_ports_[static_cast<std::size_t>(found - database_writes_.begin())];
}

std::uint64_t write_probe::unreplicated_commits() const {
  std::lock_guard lock(mutex_);
  return unreplicated_commits_;
}

bool write_probe::worker_stalled(std::size_t worker) const {
  const auto now = probe_clock::now();
  std::lock_guard lock(mutex_);
  const auto& writes = worker_writes_[worker];
  if (writes.empty() || database_writes_.empty()) return false;
  return now - writes.back() > stall_after && now - database_writes_.back() < 2 * interval_;
}

void write_probe::probe_worker(std::size_t worker) {
  bool reported = false;  // this stall's stacks are taken
  for (std::uint64_t n = 0; !stopping_; ++n) {
    if (stalled_ && !reported && worker_stalled(worker)) {
      stalled_(worker);
      reported = true;
    }
    const auto now_s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const std::string id = "evt_probe_" + std::to_string(worker) + "_" + std::to_string(n);
    // A customer event posts nothing: the worker stores it and its posting job marks it ignored.
    const std::string body = "{\"id\":\"" + id + "\",\"object\":\"event\",\"type\":\"customer.created\",\"account\":\"" +
                             account_ + "\",\"created\":" + std::to_string(now_s) +
                             ",\"livemode\":false,\"data\":{\"object\":{\"id\":\"cus_probe_" + std::to_string(worker) + "_" +
                             std::to_string(n) + "\",\"object\":\"customer\"}}}";
    const auto answer = test::http_post(worker_urls_[worker] + "/webhooks/stripe", body,
                                        {"Stripe-Signature: " + sim::stripe::simulator::sign(body, platform_secret_, now_s)});
    {
      std::lock_guard lock(mutex_);
      events_.emplace_back(id, body);
      if (answer.status >= 200 && answer.status < 300) {
        worker_writes_[worker].push_back(probe_clock::now());
        reported = false;
      }
    }
    if (answer.status < 200 || answer.status >= 300) refused_(id, body);
    std::this_thread::sleep_for(interval_);
  }
}

std::vector<std::pair<std::string, std::string>> write_probe::events() const {
  std::lock_guard lock(mutex_);
  return events_;
}

std::vector<probe_clock::time_point> write_probe::database_writes() const {
  std::lock_guard lock(mutex_);
  return database_writes_;
}

std::vector<probe_clock::time_point> write_probe::worker_writes(std::size_t worker) const {
  std::lock_guard lock(mutex_);
  return worker_writes_.at(worker);
}

std::optional<write_gap> longest_gap(const std::vector<probe_clock::time_point>& writes, probe_clock::time_point from,
                                     probe_clock::time_point to) {
  std::optional<write_gap> longest;
  for (std::size_t i = 1; i < writes.size(); ++i) {
    if (writes[i] <= from || writes[i - 1] > to) continue;
    const write_gap gap{writes[i - 1], writes[i]};
    if (!longest || gap.seconds() > longest->seconds()) longest = gap;
  }
  return longest;
}

std::optional<double> first_write_after(const std::vector<probe_clock::time_point>& writes, probe_clock::time_point at) {
  const auto found = std::lower_bound(writes.begin(), writes.end(), at);
  if (found == writes.end()) return std::nullopt;
  return std::chrono::duration<double>(*found - at).count();
}

}  // namespace bankworker::chaos
