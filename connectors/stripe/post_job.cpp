// The stripe.post handler: posts a stored Stripe event into the tenant's ledger and records the
// job's completion in the same transaction. One run reads its event once and plans it once: with
// a Stripe API configured, stripe_api_jobs::prepare_post reads, plans and fetches before the
// posting transaction, which posts that plan without reading the body again; without one, the
// posting transaction reads and plans the event itself.
//
// Group posting. One transaction per event spent most of its time on what every transaction
// pays (planning the completion, the commit's WAL flush), so the handlers running at the same
// time share transactions, the way the inbox shares commits: a handler queues its request in the
// batcher; up to batch_max waiting requests of one tenant and dispatcher are posted in one
// tenant-scoped transaction — one read of the events, one insert of entries and one of lines, one
// update of the events, one completion of every job — by the handler of one of them, which then
// wakes the others with their outcomes. At most batches_in_flight_max batches run at once.
//
// Every outcome is the one the request would have had alone: the batch decides each from the same
// posting rules. Anything that would make one request's effect differ from posting it alone —
// an entry conflict, a lease lost, a database error — rolls the whole batch back, and each of its
// requests then posts alone (post_event), where the failure lands on the job it belongs to. The
// batch is an optimisation only: it is never the only path to an outcome.

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <simdjson.h>

#include "connectors/stripe/known_charts.hpp"
#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/thin_event.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "core/assert.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"

namespace bankworker::stripe {

using service::logger;

namespace asio = boost::asio;

namespace {

// Requests of one tenant posted in one transaction. Bounded by the queue's completion batch.
constexpr std::size_t batch_max = 256;
static_assert(batch_max <= limits::job_batch_max);
// Batches written at once: two let one batch's commit (its WAL flush) overlap the next one's work.
constexpr std::size_t batches_in_flight_max = 2;

// The event a stripe.post job names; nothing when the payload has none.
std::optional<std::string> payload_event_id(std::string_view payload_json) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element payload;
  std::string_view event_id;
  if (parser.parse(payload_json.data(), payload_json.size()).get(payload) != simdjson::SUCCESS ||
      payload["event_id"].get(event_id) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  return std::string(event_id);
}

// One stripe.post job on its way into the ledger. Lives in its handler's coroutine frame, which
// waits in the batcher until the request has its outcome.
struct post_request {
  const queue::job* job = nullptr;
  const job_context* context = nullptr;
  std::string event_id;
  // What stripe_api_jobs::prepare_post read and planned (the event is not read again); null: no
  // Stripe API configured, the posting transaction reads and plans the event itself.
  const prepared_post* prepared = nullptr;
  // Set by a batch that committed; empty when the request must post alone.
  std::optional<queue::outcome> result;
  // Guarded by the batcher's mutex: a wake-up that came before its waiter, the waiter, and the
  // batch this request's handler is to run.
  std::optional<bool> signal;
  std::function<void(bool)> resume;
  std::vector<post_request*> batch;
};

// What one event becomes: its outcome, the entries to post and the state to give it.
struct event_decision {
  queue::outcome result = queue::outcome::done();
  std::vector<ledger::entry> entries;
  std::optional<std::string> new_state;  // posted, ignored; nothing: leave the event as it is
  settlement_summary settlement;          // posted: the legs settled, and those left awaiting
};

// What a plan makes of its event: entries to post and "posted", "ignored", or a failed job.
event_decision decide_plan(const std::string& event_id, const posting_plan& plan) {
  event_decision decision;
  if (plan.status == plan_status::post) {
    decision.entries = plan.entries;
    decision.new_state = "posted";
    decision.settlement = settlement_summary_of(plan);
  } else if (plan.status == plan_status::ignore) {
    decision.new_state = "ignored";
  } else {
    // Fail the job, post nothing; the event keeps its state for a person to look at.
    decision.result = queue::outcome::failed_permanently("event " + event_id + ": " + plan.reason);
  }
  return decision;
}

// The posting rules applied to one event: as prepare_post planned it, or as stored (none: not in
// the inbox), planned here.
event_decision decide(const std::string& event_id, const prepared_post* prepared, const stored_event* stored,
                      const core::currency_table& currencies) {
  event_decision decision;
  const bool found = prepared != nullptr ? prepared->state.has_value() : stored != nullptr;
  if (!found) {
    decision.result = queue::outcome::failed_permanently("event " + event_id + " is not in the inbox");
    return decision;
  }
  if (prepared != nullptr) return prepared->plan ? decide_plan(event_id, *prepared->plan) : decision;
  if (!awaits_posting(stored->state)) return decision;  // posted or ignored before: done
  thread_local simdjson::dom::parser event_parser;
  const posting_plan plan = plan_postings(event_parser, stored->body, currencies);
  if (plan.status == plan_status::ignore) {
    if (auto waiting = stripe::unfetched_thin_money(event_parser, stored->body)) {
      decision.result = queue::outcome::needs_user_action(*waiting);
      return decision;
    }
  }
  return decide_plan(event_id, plan);
}

// Posts one request alone, in a transaction of its own. Runs on the DB thread pool.
queue::outcome post_event(db::pool& connections, const core::currency_table& currencies, const post_request& request) {
  return db::with_tenant(connections, request.job->ref.tenant, [&](pqxx::work& tx) -> queue::outcome {
    std::optional<stored_event> stored;
    if (request.prepared == nullptr) stored = load_event(tx, request.event_id);
    event_decision decision = decide(request.event_id, request.prepared, stored ? &*stored : nullptr, currencies);
    if (!decision.entries.empty()) {
      std::vector<const ledger::entry*> entries;
      for (const ledger::entry& entry : decision.entries) entries.push_back(&entry);
      ledger::ensure_chart(tx);
      ledger::post_entries(tx, entries);
    }
    settlement_marks marks;
    marks.add(request.event_id, decision.settlement);
    std::vector<std::string> ids, states;
    if (decision.new_state) {
      ids.push_back(request.event_id);
      states.push_back(*decision.new_state);
    }
    marks.write(tx, ids, states);
    complete_in_or_throw(tx, *request.context, *request.job, decision.result);
    return decision.result;
  });
}

// A batch could not give every request the outcome it would have had alone: roll it back.
class batch_abandoned : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Posts every request of `batch` (one tenant, one dispatcher) in one transaction and sets their
// results; throws, leaving every result empty, when the batch must be rolled back. Runs on the
// DB thread pool.
void post_batch(db::pool& connections, const core::currency_table& currencies, known_charts& charts,
                std::span<post_request* const> batch) {
  BW_ASSERT(!batch.empty());
  const queue::job_ref& first = batch.front()->job->ref;
  const job_context& context = *batch.front()->context;
  const bool chart_known = charts.contains(first.tenant);
  bool chart_ensured = false;
  std::vector<queue::outcome> results;
  db::with_tenant(connections, first.tenant, [&](pqxx::work& tx) {
    std::vector<std::string> event_ids;  // the events not read and planned before (no Stripe API)
    event_ids.reserve(batch.size());
    for (const post_request* request : batch) {
      if (request->prepared == nullptr) event_ids.push_back(request->event_id);
    }
    std::sort(event_ids.begin(), event_ids.end());
    event_ids.erase(std::unique(event_ids.begin(), event_ids.end()), event_ids.end());
    const std::map<std::string, stored_event, std::less<>> stored = load_events(tx, event_ids);
    std::set<std::string, std::less<>> marked;  // events this batch gave a new state

    std::vector<event_decision> decisions;
    decisions.reserve(batch.size());
    std::vector<const ledger::entry*> entries;
    std::vector<std::string> marked_ids, marked_states;
    std::vector<queue::completion> completions;
    completions.reserve(batch.size());
    settlement_marks marks;
    for (const post_request* request : batch) {
      BW_INVARIANT(request->job->ref.tenant == first.tenant);
      const auto found = stored.find(request->event_id);
      if (marked.contains(request->event_id)) {
        // A second job for the same event later in this batch finds it done, as it would alone.
        decisions.emplace_back();
      } else {
        decisions.push_back(decide(request->event_id, request->prepared,
                                   found == stored.end() ? nullptr : &found->second, currencies));
      }
      const event_decision& decision = decisions.back();
      for (const ledger::entry& entry : decision.entries) entries.push_back(&entry);
      if (decision.new_state) {
        marks.add(request->event_id, decision.settlement);
        marked.insert(request->event_id);
        marked_ids.push_back(request->event_id);
        marked_states.push_back(*decision.new_state);
      }
      completions.push_back({request->job->ref, request->job->attempt, decision.result});
      results.push_back(decision.result);
    }
    if (!entries.empty()) {
      if (!chart_known) {
        ledger::ensure_chart(tx);
        chart_ensured = true;
      }
      ledger::post_entries(tx, entries);
    }
    marks.write(tx, marked_ids, marked_states);
    const std::vector<queue::completed> completed = context.jobs().complete_in(tx, context.owner(), completions);
    if (completed.size() != completions.size()) throw batch_abandoned("a lease was lost");
  });
  if (chart_ensured) charts.add(first.tenant);  // committed
  for (std::size_t i = 0; i < batch.size(); ++i) batch[i]->result = std::move(results[i]);
}

// Gathers the requests of handlers running at the same time into batches (see the top).
//
// A batch is formed under the mutex and handed to one of its own requests, whose handler runs it
// and then wakes the others with their results. A request arriving while fewer than
// batches_in_flight_max batches run starts one at once (then nothing else waits: a batch that
// ends with requests waiting forms the next one before it gives up its place). So every request
// is woken exactly once: to run its batch, or with its batch's result.
class post_batcher {
 public:
  post_batcher(db::pool& connections, const core::currency_table& currencies, logger* log)
      : connections_(connections), currencies_(currencies), log_(log) {}

  // Returns once `request` has its result, or none (post it alone). `request` lives in the
  // caller's coroutine frame until then.
  asio::awaitable<void> post(post_request& request) {
    std::vector<post_request*> batch;
    {
      std::lock_guard lock(mutex_);
      waiting_.push_back(&request);
      if (batches_running_ < batches_in_flight_max) {
        ++batches_running_;
        batch = take_batch();
      }
    }
    if (batch.empty()) {
      if (!co_await wait(request)) co_return;  // another request's handler ran the batch
      batch = std::move(request.batch);
    }
    BW_INVARIANT(std::find(batch.begin(), batch.end(), &request) != batch.end());
    try {
      co_await request.context->run_db([&] { post_batch(connections_, currencies_, charts_, batch); });
    } catch (const std::exception& error) {
      // Rolled back, and no result was set: every request of the batch posts alone, where its
      // failure is classified.
      if (log_ != nullptr) {
        log_->warn("stripe.post batch rolled back; its jobs post alone",
                   {{"tenant", request.job->ref.tenant.to_string()},
                    {"jobs", static_cast<std::uint64_t>(batch.size())},
                    {"reason", error.what()}});
      }
    }
    std::vector<post_request*> next;
    {
      std::lock_guard lock(mutex_);
      if (waiting_.empty()) {
        --batches_running_;
      } else {
        next = take_batch();
      }
    }
    for (post_request* taken : batch) {
      if (taken != &request) signal(*taken, false, {});
    }
    if (!next.empty()) {
      post_request& runner = *next.front();
      signal(runner, true, std::move(next));
    }
  }

 private:
  // Up to batch_max waiting requests of the first one's tenant and dispatcher, in arrival order.
  // Call with mutex_ held.
  std::vector<post_request*> take_batch() {
    std::vector<post_request*> batch;
    BW_INVARIANT(!waiting_.empty());
    const post_request* first = waiting_.front();
    for (auto it = waiting_.begin(); it != waiting_.end() && batch.size() < batch_max;) {
      if ((*it)->job->ref.tenant == first->job->ref.tenant && (*it)->context->owner() == first->context->owner()) {
        batch.push_back(*it);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    return batch;
  }

  // Resumes `request`'s handler: to run `batch` (run true), or with its result decided.
  void signal(post_request& request, bool run, std::vector<post_request*> batch) {
    std::function<void(bool)> resume;
    {
      std::lock_guard lock(mutex_);
      request.batch = std::move(batch);
      if (request.resume) {
        resume = std::move(request.resume);
        request.resume = nullptr;
      } else {
        request.signal = run;
      }
    }
    if (resume) resume(run);
  }

  // Waits for signal(); true: run the batch in request.batch.
  asio::awaitable<bool> wait(post_request& request) {
    auto initiate = [this, &request](auto handler) {
      auto shared_handler = std::make_shared<decltype(handler)>(std::move(handler));
      std::function<void(bool)> resume = [shared_handler](bool run) {
        asio::post(asio::get_associated_executor(*shared_handler),
                   [shared_handler, run]() mutable { std::move(*shared_handler)(run); });
      };
      std::optional<bool> early;
      {
        std::lock_guard lock(mutex_);
        early = std::exchange(request.signal, std::nullopt);
        if (!early) request.resume = std::move(resume);
      }
      if (early) resume(*early);
    };
    co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(bool)>(std::move(initiate),
                                                                                        asio::use_awaitable);
  }

  db::pool& connections_;                   // outlives the dispatcher (stripe_post_handler's contract)
  const core::currency_table& currencies_;  // the same
  logger* log_;                             // the same, or null: rollbacks are not logged
  known_charts charts_;
  std::mutex mutex_;
  std::deque<post_request*> waiting_;
  std::size_t batches_running_ = 0;
};

}  // namespace

job_handler stripe_post_handler(db::pool& connections, const core::currency_table& currencies,
                                const stripe_api_jobs* api, logger* log) {
  auto batcher = std::make_shared<post_batcher>(connections, currencies, log);
  return [&connections, &currencies, api, batcher](queue::job job,
                                                   job_context context) -> asio::awaitable<queue::outcome> {
    const std::optional<std::string> event_id = payload_event_id(job.payload_json);
    if (!event_id) co_return queue::outcome::failed_permanently("stripe.post payload has no event_id");
    post_request request;
    request.event_id = *event_id;
    request.job = &job;
    request.context = &context;
    prepared_post prepared;
    if (api != nullptr) {
      // Named, not a temporary inside the co_await (GCC 12 may destroy those twice).
      auto preparing = api->prepare_post(job, context, *event_id);
      prepared = co_await std::move(preparing);
      if (prepared.stop) co_return *prepared.stop;
      request.prepared = &prepared;
    }
    try {
      auto posting = batcher->post(request);
      co_await std::move(posting);
      queue::outcome result = request.result ? *request.result : queue::outcome::done();
      if (!request.result) {
        result = co_await context.run_db([&] { return post_event(connections, currencies, request); });
      }
      context.mark_completed();
      co_return result;
    } catch (const ledger::entry_conflict& error) {
      co_return queue::outcome::failed_permanently(error.what());
    } catch (const ledger::entry_invalid& error) {
      co_return queue::outcome::failed_permanently(error.what());
    }
  };
}

}  // namespace bankworker::stripe
