#include "connectors/stripe/inbox.hpp"

#include <algorithm>
#include <future>
#include <map>
#include <unordered_map>

#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "connectors/stripe/intake.hpp"
#include "core/assert.hpp"
#include "db/connection_problem.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"
#include "ledger/ledger.hpp"

namespace bankworker::stripe {

namespace asio = boost::asio;

namespace {

// Sets the tenant scope and inserts (migration 0055): in autocommit, the whole batch in one round trip.
constexpr db::statement insert_events_sql{"inbox_insert_events",
    "SELECT e FROM bankworker.stripe_inbox_store($1::uuid, $2::text[], $3::text[], $4::text[], $5::boolean[],"
    " $6::bigint[], $7::text[], $8::smallint[]) AS e"};
constexpr db::statement insert_unrouted_sql{"inbox_insert_unrouted",
    "INSERT INTO bankworker.stripe_unrouted_events (event_id, account, type, livemode, created_at, body)"
    " SELECT e.id, e.account, e.type, e.livemode, to_timestamp(e.created), e.body"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::bigint[], $6::text[])"
    "      AS e(id, type, account, livemode, created, body)"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"};
// Sets the tenant scope, stores the events and posts those the committer planned final, in lanes
// no poster holds and no event waits in (migration 0057): in autocommit, one round trip.
constexpr db::statement post_events_sql{"inbox_post_events",
    "SELECT stored_event_id, stored_state FROM bankworker.stripe_inbox_post($1::uuid, $2::text[], $3::text[],"
    " $4::text[], $5::boolean[], $6::bigint[], $7::text[], $8::smallint[], $9::text[], $10::text[], $11::text[],"
    " $12::text[], $13::text[], $14::uuid[], $15::text[], $16::text[], $17::bigint[], $18::text[], $19::text[],"
    " $20::uuid[], $21::smallint[], $22::text[], $23::bigint[], $24::text[])"};
constexpr db::statement route_accounts_sql{
    "inbox_route_accounts", "SELECT account, tenant_id::text FROM bankworker.route_stripe_accounts($1::text[])"};

// A batch's events as the inbox functions take them, in the batch's order.
struct event_arrays {
  db::array_text ids, types, accounts, livemodes, created, lanes;
  db::binary_text_array bodies;  // the ~2 KB bodies: no escaping here, no array_in there

  explicit event_arrays(std::span<const inbox_event* const> events) {
    std::size_t bytes = 0;
    for (const inbox_event* e : events) bytes += e->body.size() + 4;
    bodies.reserve(bytes);
    for (const inbox_event* e : events) {
      ids.add(e->event_id);
      types.add(e->type);
      accounts.add(e->account ? std::optional<std::string_view>(*e->account) : std::nullopt);
      livemodes.add(e->livemode ? "true" : "false");
      created.add(std::to_string(e->created_s));
      bodies.add(e->body);
      lanes.add(std::to_string(e->posting_lane));
    }
  }
  pqxx::binarystring body_array() {
    const std::string& all = bodies.finish();
    return pqxx::binarystring(all.data(), all.size());
  }
};

}  // namespace

std::uint8_t posting_lane_of(std::string_view money_object_id) noexcept {
  if (money_object_id.empty()) return 0;
  std::uint32_t hash = 2166136261u;
  for (const char c : money_object_id) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 16777619u;
  }
  return static_cast<std::uint8_t>(hash % posting_lanes);
}

struct inbox::pending {
  inbox_event event;
  inbox_outcome outcome = inbox_outcome::unavailable;
  // Resumes the waiter with `outcome`, taking the item: set by store() and store_blocking().
  std::function<void(std::shared_ptr<pending>)> complete;
};

void inbox::finish(std::shared_ptr<pending> item, inbox_outcome outcome) {
  item->outcome = outcome;
  // Out of the item first: the completion may free it (on another thread) while this still runs.
  const auto complete = std::move(item->complete);
  complete(std::move(item));
}

inbox::inbox(db::pool& connections, inbox_settings settings, inbox_hook after_store,
             std::function<void(std::span<const tenant_lane>)> on_committed)
    : connections_(connections),
      settings_(settings),
      after_store_(std::move(after_store)),
      on_committed_(std::move(on_committed)),
      committer_([this] { run(); }) {}

inbox::~inbox() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  committer_.join();
}

void inbox::enqueue(std::shared_ptr<pending> item) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_ && waiting_.size() < settings_.pending_max) {
      waiting_.push_back(std::move(item));
      item = nullptr;
    }
  }
  if (item) {
    finish(std::move(item), inbox_outcome::unavailable);  // full or stopping: the sender retries later
    return;
  }
  wake_.notify_one();
}

asio::awaitable<inbox_outcome> inbox::store(inbox_event event) {
  auto initiate = [this](auto handler, inbox_event e) {
    auto item = std::make_shared<pending>();
    item->event = std::move(e);
    auto shared_handler = std::make_shared<decltype(handler)>(std::move(handler));
    item->complete = [shared_handler](std::shared_ptr<pending> done) {
      auto executor = asio::get_associated_executor(*shared_handler);
      asio::dispatch(executor, [shared_handler, done = std::move(done)]() mutable {
        const inbox_outcome outcome = done->outcome;
        // The event (its ~2 KB body) is freed on the request's thread, which allocated it, not on
        // the committer's: memory freed across threads cost the allocator its arena locks.
        done.reset();
        std::move (*shared_handler)(outcome);
      });
    };
    enqueue(std::move(item));
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(inbox_outcome)>(
      std::move(initiate), asio::use_awaitable, std::move(event));
}

inbox_outcome inbox::store_blocking(inbox_event event) {
  auto item = std::make_shared<pending>();
  item->event = std::move(event);
  auto promise = std::make_shared<std::promise<inbox_outcome>>();
  auto result = promise->get_future();
  item->complete = [promise](std::shared_ptr<pending> done) { promise->set_value(done->outcome); };
  enqueue(std::move(item));
  return result.get();
}

inbox::counters inbox::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void inbox::run() {
  for (;;) {
    std::vector<std::shared_ptr<pending>> batch;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (stopping_) {
        for (auto& item : waiting_) batch.push_back(std::move(item));
        waiting_.clear();
        lock.unlock();
        for (auto& item : batch) finish(std::move(item), inbox_outcome::unavailable);
        return;
      }
      const std::size_t take = std::min(settings_.batch_max, waiting_.size());
      for (std::size_t i = 0; i < take; ++i) {
        batch.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
    }
    commit(batch);
    {
      std::lock_guard lock(mutex_);
      ++stats_.batches;
      stats_.events += batch.size();
    }
    for (auto& item : batch) {
      const inbox_outcome outcome = item->outcome;
      finish(std::move(item), outcome);
    }
  }
}

void inbox::commit(std::vector<std::shared_ptr<pending>>& batch) {
  for (auto& item : batch) item->outcome = inbox_outcome::unavailable;
  try {
    auto lease = connections_.checkout();
    // Writes and commits `part`; false when a statement failed on its content (the database is fine).
    const auto attempt = [&](std::span<const std::shared_ptr<pending>> part, bool posting) {
      try {
        written out;
        write_whole(lease, part, posting, out);
        committed(out);
        return true;
      } catch (const pqxx::broken_connection&) {
        lease.discard();
        throw;
      } catch (const pqxx::in_doubt_error&) {
        // The commit may have landed. Answering 503 is safe: Stripe redelivers and the retry finds
        // the event stored (duplicate, 2xx), and its job was enqueued with it or not at all.
        lease.discard();
        throw;
      } catch (const pqxx::sql_error& error) {
        // A failover symptom (the server went read-only, is shutting down): nothing is wrong with
        // the events; answer 503 and Stripe retries (db/connection_problem.hpp).
        if (db::is_connection_problem(error)) {
          lease.discard();
          throw;
        }
        if (posting) settings_.post_at_intake->fell_back(error.what());
        return false;
      }
    };
    // Posting at intake refused (an entry conflict, say): the batch is stored for the posters.
    const bool posting = settings_.post_at_intake != nullptr && !after_store_;
    if (posting && attempt(batch, true)) return;
    if (attempt(batch, false)) return;
    // Some event's content poisoned the batch (a jsonb PostgreSQL cannot hold, say). Write them
    // one transaction each, so only that event is rejected.
    for (auto& item : batch) {
      const std::shared_ptr<pending> one[] = {item};
      if (!attempt(one, false)) item->outcome = inbox_outcome::rejected;
    }
  } catch (const pqxx::broken_connection&) {
    for (auto& item : batch) {
      if (item->outcome != inbox_outcome::rejected) item->outcome = inbox_outcome::unavailable;
    }
  } catch (const pqxx::in_doubt_error&) {
    for (auto& item : batch) item->outcome = inbox_outcome::unavailable;
  } catch (const db::pool_timeout&) {
    for (auto& item : batch) item->outcome = inbox_outcome::unavailable;
  } catch (const std::exception&) {
    // The hook failed (enqueueing the posting job, say): nothing of the batch committed, and the
    // senders retry. The committer itself must live on.
    for (auto& item : batch) item->outcome = inbox_outcome::unavailable;
  }
}

void inbox::committed(const written& out) const {
  if (settings_.post_at_intake != nullptr) {
    for (const core::uuid& tenant : out.charts) settings_.post_at_intake->chart_ensured(tenant);
    settings_.post_at_intake->committed(out.posted, out.ignored);
  }
  if (on_committed_ && !out.waiting.empty()) on_committed_(out.waiting);
}

std::map<std::string, std::vector<inbox::pending*>> inbox::group_by_tenant(
    pqxx::work& tx, std::span<const std::shared_ptr<pending>> batch) {
  // Platform events are routed by account first, in this transaction (the function's locks hold
  // until it commits). Routing is not remembered across attempts: a retry routes again.
  std::map<std::string, std::string, std::less<>> tenant_of_account;
  {
    db::array_text accounts;
    for (const auto& item : batch) {
      if (!item->event.tenant && item->event.account) accounts.add(*item->event.account);
    }
    if (!accounts.empty()) {
      for (const auto& row : db::exec_statement(tx, route_accounts_sql, accounts.finish())) {
        if (!row[1].is_null()) tenant_of_account.emplace(row[0].as<std::string>(), row[1].as<std::string>());
      }
    }
  }
  // Group by tenant (unrouted events under the empty key), keeping arrival order within each.
  std::map<std::string, std::vector<pending*>> groups;
  for (const auto& item : batch) {
    std::string key;
    if (item->event.tenant) {
      key = item->event.tenant->to_string();
    } else if (item->event.account) {
      const auto found = tenant_of_account.find(*item->event.account);
      if (found != tenant_of_account.end()) key = found->second;
    }
    groups[key].push_back(item.get());
  }
  return groups;
}

std::optional<std::string> inbox::sole_tenant(std::span<const std::shared_ptr<pending>> batch) const {
  if (after_store_ || batch.empty()) return std::nullopt;
  const std::optional<core::uuid>& first = batch.front()->event.tenant;
  if (!first) return std::nullopt;
  for (const auto& item : batch) {
    if (item->event.tenant != first) return std::nullopt;
  }
  return first->to_string();
}

void inbox::write_whole(db::pool::lease& lease, std::span<const std::shared_ptr<pending>> batch, bool posting,
                        written& out) {
  if (const std::optional<std::string> tenant = sole_tenant(batch)) {
    std::vector<pending*> items;
    items.reserve(batch.size());
    for (const auto& item : batch) items.push_back(item.get());
    if (posting && !settings_.post_at_intake->chart_known(*core::uuid::parse(*tenant))) {
      pqxx::work tx(lease.connection(), "bankworker_inbox_chart");
      ensure_chart(tx, *tenant, out);
      lease.commit(tx);
    }
    // One statement and nothing else in its transaction: autocommit, so the server commits it
    // before answering (the WAL flush of a COMMIT) and the batch costs one round trip.
    const db::commit_watch::ticket deadline = lease.watch_autocommit();
    pqxx::nontransaction tx(lease.connection(), "bankworker_inbox");
    store_group(tx, *tenant, items, posting, out);
    lease.commit(tx);
    return;
  }
  pqxx::work tx(lease.connection(), "bankworker_inbox");
  write_batch(tx, batch, posting, out);
  lease.commit(tx);
}

std::vector<const inbox_event*> inbox::store_group(pqxx::transaction_base& tx, const std::string& tenant_text,
                                                   std::span<pending* const> items, bool posting,
                                                   written& out) const {
  std::vector<const inbox_event*> events;
  events.reserve(items.size());
  for (const pending* p : items) events.push_back(&p->event);
  event_arrays arrays(events);
  const bool routed = !tenant_text.empty();
  posting = posting && routed;
  // An unrouted event has no lane yet: it is in lane 0 when its account is routed later.
  const pqxx::binarystring body_array = arrays.body_array();
  pqxx::result inserted;
  if (posting) {
    intake_plan plan = settings_.post_at_intake->plan(events);
    ledger::entry_arrays& entries = plan.entries;
    inserted = db::exec_statement(
        tx, post_events_sql, tenant_text, arrays.ids.finish(), arrays.types.finish(), arrays.accounts.finish(),
        arrays.livemodes.finish(), arrays.created.finish(), body_array, arrays.lanes.finish(), plan.states.finish(),
        plan.legs.finish(), plan.fees.finish(), plan.fxs.finish(), plan.entry_events.finish(), entries.ids.finish(),
        entries.keys.finish(), entries.descriptions.finish(), entries.occurred.finish(), entries.sources.finish(),
        entries.metadata.finish(), entries.line_entries.finish(), entries.line_numbers.finish(),
        entries.accounts.finish(), entries.amounts.finish(), entries.currencies.finish());
  } else if (routed) {
    inserted = db::exec_statement(tx, insert_events_sql, tenant_text, arrays.ids.finish(), arrays.types.finish(),
                                  arrays.accounts.finish(), arrays.livemodes.finish(), arrays.created.finish(),
                                  body_array, arrays.lanes.finish());
  } else {
    inserted = db::exec_statement(tx, insert_unrouted_sql, arrays.ids.finish(), arrays.types.finish(),
                                  arrays.accounts.finish(), arrays.livemodes.finish(), arrays.created.finish(),
                                  body_array);
  }
  // Each new event's state: received (for the posters), or posted or ignored at intake.
  enum class stored_as : std::uint8_t { received, posted, ignored };
  std::unordered_map<std::string, stored_as> state_of;
  for (const auto& row : inserted) {
    const std::string_view state = posting ? std::string_view(row[1].c_str(), row[1].size()) : "received";
    state_of.emplace(row[0].as<std::string>(), state == "posted"    ? stored_as::posted
                                               : state == "ignored" ? stored_as::ignored
                                                                    : stored_as::received);
  }

  std::vector<const inbox_event*> stored;
  const core::uuid tenant = routed ? *core::uuid::parse(tenant_text) : core::uuid{};
  for (pending* p : items) {
    // The first copy of a new id was stored; any other copy in this batch is a duplicate.
    const auto found = state_of.find(p->event.event_id);
    if (found == state_of.end()) {
      p->outcome = inbox_outcome::duplicate;
      continue;
    }
    p->outcome = routed ? inbox_outcome::stored : inbox_outcome::unrouted;
    stored.push_back(&p->event);
    if (found->second == stored_as::posted) {
      ++out.posted;
    } else if (found->second == stored_as::ignored) {
      ++out.ignored;
    } else if (routed) {
      // Each tenant's events are one group: its lanes come from this group alone.
      const tenant_lane at{tenant, p->event.posting_lane};
      if (std::find(out.waiting.begin(), out.waiting.end(), at) == out.waiting.end()) out.waiting.push_back(at);
    }
    state_of.erase(found);
  }
  if (!routed) return {};
  return stored;
}

void inbox::ensure_chart(pqxx::work& tx, const std::string& tenant_text, written& out) const {
  const core::uuid tenant = *core::uuid::parse(tenant_text);
  if (settings_.post_at_intake->chart_known(tenant)) return;
  // The journal's lines name the tenant's accounts: once per tenant and process, before its first
  // posting (as the posters do, known_charts.hpp).
  tx.exec_prepared(db::set_tenant_statement, tenant_text);
  ledger::ensure_chart(tx);
  out.charts.push_back(tenant);  // known once `tx` commits
}

void inbox::write_batch(pqxx::work& tx, std::span<const std::shared_ptr<pending>> batch, bool posting,
                        written& out) {
  std::map<std::string, std::vector<pending*>> groups = group_by_tenant(tx, batch);
  for (auto& [tenant_text, items] : groups) {
    if (posting && !tenant_text.empty()) ensure_chart(tx, tenant_text, out);
    const std::vector<const inbox_event*> stored = store_group(tx, tenant_text, items, posting, out);
    if (stored.empty() || !after_store_) continue;
    after_store_(tx, *core::uuid::parse(tenant_text), stored);
  }
}

}  // namespace bankworker::stripe
