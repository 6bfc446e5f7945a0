#pragma once
// The Stripe webhook inbox with group commit (DESIGN.md §3: "webhook inserts from concurrent
// requests share one commit before each request is answered").
//
// Verified events from any number of concurrent requests queue here; one committer thread takes
// up to batch_max of them at a time and writes them in ONE transaction — per tenant, one call of
// bankworker.stripe_inbox_store, which sets bankworker.tenant_id for the transaction and inserts
// the events (a multi-row INSERT … ON CONFLICT DO NOTHING), so row-level security holds for every
// row — then runs the caller's hook, if any, for the rows that were new (in the same transaction),
// commits, tells the caller that new events are committed (the wiring
// wakes the posters, connectors/stripe/poster.hpp: the inbox is their queue), and only then
// completes each request. A request is answered 2xx only once its row is durable. While a commit
// is in flight the next batch fills up, so the batch size follows the load by itself. A batch of
// one tenant's events with no hook (the webhook route's usual batch) is that one call alone, sent
// in autocommit: one round trip, committed (WAL flushed) before the server answers it. With
// post_at_intake set, that call is bankworker.stripe_inbox_post instead, which also posts the
// events the posting rules settle from their bodies (intake.hpp), so those never wait for a poster.
//
// Events of the Connect platform endpoint come without a tenant: the committer routes them by
// their `account` in the same transaction (bankworker.route_stripe_accounts, which also locks the
// account against a concurrent `stripe connect`), into the mapped tenant's inbox with its hook,
// or, when no tenant claims the account (or there is none), into
// bankworker.stripe_unrouted_events, verified and kept until `bankworker stripe connect` moves
// them. Duplicates by event id behave the same in both places.

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/pool.hpp"

namespace bankworker::stripe {

struct inbox_event {
  std::optional<core::uuid> tenant;  // empty: a Connect platform event, routed by `account`
  std::string event_id;
  std::string type;
  std::optional<std::string> account;
  bool livemode = false;
  std::int64_t created_s = 0;
  std::string body;  // the raw body as received and verified: valid JSON
  std::uint8_t posting_lane = 0;  // posting_lane_of the event's money object (migration 0046)
};

// A tenant's events post in this many lanes side by side, each in arrival order (migration 0046).
inline constexpr std::uint8_t posting_lanes = 4;

// The lane of the events about one money object: a stable hash of its id (FNV-1a, so every worker
// and every release agrees), modulo posting_lanes; lane 0 for an event that names none.
std::uint8_t posting_lane_of(std::string_view money_object_id) noexcept;

// One posting lane of one tenant: what a poster locks, claims from and posts (poster.hpp).
struct tenant_lane {
  core::uuid tenant;
  std::uint8_t lane = 0;
  bool operator==(const tenant_lane&) const = default;
};

enum class inbox_outcome {
  stored,       // durable now (in a tenant's inbox): answer 2xx
  unrouted,     // durable now, in stripe_unrouted_events (no tenant claims the account): answer 2xx
  duplicate,    // already stored earlier (or earlier in this batch): answer 2xx, nothing changed
  rejected,     // the database refused this event's content (a jsonb it cannot hold): answer 400
  unavailable,  // the database is unreachable or the inbox is full: answer 503, Stripe retries
};

class intake_planner;  // intake.hpp

struct inbox_settings {
  std::size_t batch_max = 1'000;
  std::size_t pending_max = 20'000;  // more waiting than this: answer 503 at once (back-pressure)
  // Set: a batch of one tenant's events is posted as it is stored, what the posting rules can
  // settle from the bodies alone (intake.hpp); the lanes the committer reports are then those that
  // got events left for the posters. Outlives the inbox. Null: every event is stored received.
  intake_planner* post_at_intake = nullptr;
};

// Called in the batch's transaction, per tenant, with the events that were new (not duplicates),
// after SET LOCAL bankworker.tenant_id of that tenant.
using inbox_hook = std::function<void(pqxx::work& tx, const core::uuid& tenant, std::span<const inbox_event* const>)>;

class inbox {
 public:
  // `connections` must outlive the inbox; one connection is held by the committer while it writes.
  // `after_store` may be empty; `on_committed` (may be empty) runs on the committer's thread after
  // each commit that stored a new event, before the requests are answered, with the tenants' lanes
  // that got new events (each once).
  inbox(db::pool& connections, inbox_settings settings, inbox_hook after_store,
        std::function<void(std::span<const tenant_lane>)> on_committed = {});
  inbox(const inbox&) = delete;
  inbox& operator=(const inbox&) = delete;
  // Completes whatever is still waiting as unavailable, then stops the committer.
  ~inbox();

  // Queues `event` and resumes the caller once its batch committed (or failed).
  boost::asio::awaitable<inbox_outcome> store(inbox_event event);

  // The same, blocking: for tests and tools that have no io_context.
  inbox_outcome store_blocking(inbox_event event);

  struct counters {
    std::uint64_t batches = 0;
    std::uint64_t events = 0;
  };
  counters stats() const;

 private:
  struct pending;
  void run();
  void commit(std::vector<std::shared_ptr<pending>>& batch);
  // The batch's events by tenant (text; unrouted ones under ""), platform events routed by account
  // in `tx`, arrival order kept within each.
  static std::map<std::string, std::vector<pending*>> group_by_tenant(pqxx::work& tx,
                                                                      std::span<const std::shared_ptr<pending>> batch);
  // The batch's one tenant when every event names it and there is no after_store hook: the batch
  // is then one statement, written in autocommit.
  std::optional<std::string> sole_tenant(std::span<const std::shared_ptr<pending>> batch) const;
  // What a committed batch did beyond its outcomes: the tenant lanes that got events for the
  // posters (each once), what it posted and ignored at intake, the tenants whose chart it ensured.
  struct written {
    std::vector<tenant_lane> waiting;
    std::uint64_t posted = 0;
    std::uint64_t ignored = 0;
    std::vector<core::uuid> charts;
  };
  // Writes and commits the batch on `lease`, posting at intake when `posting`.
  void write_whole(db::pool::lease& lease, std::span<const std::shared_ptr<pending>> batch, bool posting,
                   written& out);
  // Writes the batch in `tx` (several tenants, routing or the hook); the rest as write_whole's.
  void write_batch(pqxx::work& tx, std::span<const std::shared_ptr<pending>> batch, bool posting, written& out);
  // Inserts one group's events (a tenant's, scoping tx to it, or the unrouted ones for "") and
  // sets their outcomes; posts at intake when `posting` (a tenant's group only). Returns the new
  // events of a tenant and adds to `out` the lanes of those left for the posters.
  std::vector<const inbox_event*> store_group(pqxx::transaction_base& tx, const std::string& tenant_text,
                                              std::span<pending* const> items, bool posting, written& out) const;
  // Before a tenant's first posting at intake in this process: its chart, in `tx` (scoped to it).
  void ensure_chart(pqxx::work& tx, const std::string& tenant_text, written& out) const;
  // A batch committed: the posters are woken for its waiting lanes, the intake's tallies counted.
  void committed(const written& out) const;
  void enqueue(std::shared_ptr<pending> item);
  // Gives the item its outcome and hands it to its completion, which resumes the waiter.
  static void finish(std::shared_ptr<pending> item, inbox_outcome outcome);

  db::pool& connections_;  // outlives the inbox (constructor contract)
  const inbox_settings settings_;
  const inbox_hook after_store_;
  const std::function<void(std::span<const tenant_lane>)> on_committed_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<pending>> waiting_;
  bool stopping_ = false;
  counters stats_;
  std::thread committer_;
};

// The unposted inbox for the operators' gauges (migrations 0028, 0035): one row (events bigint,
// oldest_s bigint, failed bigint), the Stripe events received but not yet posted, the oldest one's
// age, and the events dead-lettered.
inline constexpr const char* inbox_gauges_sql = "SELECT events, oldest_s, failed FROM bankworker.inbox_gauges()";

}  // namespace bankworker::stripe
