// The stripe.post handler with many jobs running at once: their postings share transactions
// (connectors/stripe/post_job.cpp), and every job still gets the outcome it would have had alone. Real
// inbox, dispatcher and handler on the private PostgreSQL.
#include <catch2/catch.hpp>

#include <cstdio>
#include <functional>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "db/currencies.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"
#include "ledger/tenants.hpp"
#include "queue/queue.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"
#include "worker/dispatcher.hpp"

using namespace std::chrono_literals;
using bankworker::test::scratch_database;
namespace asio = boost::asio;
namespace db = bankworker::db;
namespace queue = bankworker::queue;
namespace worker = bankworker::worker;
namespace stripe = bankworker::stripe;
namespace ledger = bankworker::ledger;

namespace {

// A payment_intent.succeeded event for charge `charge_id` of `amount` cents.
std::string payment_event(const std::string& event_id, const std::string& charge_id, std::int64_t amount) {
  const std::string cents = std::to_string(amount);
  return R"({"id":")" + event_id + R"(","object":"event","type":"payment_intent.succeeded","created":1763800000,)"
         R"("livemode":false,"data":{"object":{"id":"pi_)" + charge_id + R"(","object":"payment_intent","amount":)" +
         cents + R"(,"amount_received":)" + cents + R"(,"currency":"usd","created":1763800000,"latest_charge":")" +
         charge_id + R"(","status":"succeeded"}}})";
}

stripe::inbox_event inbox_event_of(const bankworker::core::uuid& tenant, const std::string& event_id, std::string body) {
  stripe::inbox_event event;
  event.tenant = tenant;
  event.event_id = event_id;
  event.type = "payment_intent.succeeded";
  event.created_s = 1763800000;
  event.body = std::move(body);
  return event;
}

// A tenant whose inbox holds events before any stripe.post job runs, and a dispatcher that then
// works them `concurrency` at a time.
struct posting_world {
  scratch_database database;
  std::unique_ptr<db::pool> connections = [&] {
    db::pool_settings settings;
    settings.connections = 8;
    return database.worker_pool(std::move(settings));
  }();
  std::unique_ptr<db::key_store> keys = bankworker::test::test_key_store();
  bankworker::core::uuid tenant = ledger::create_tenant(*connections, *keys, "posting tenant", "test");
  bankworker::core::currency_table currencies = [&] {
    auto lease = connections->checkout();
    pqxx::read_transaction tx(lease.connection());
    return db::load_currencies(tx);
  }();
  queue::job_queue jobs{*connections, queue::queue_settings{}};
  stripe::inbox inbox{*connections, {}, stripe::enqueue_stripe_posts()};
  // The handler's warnings, readable by the test.
  std::FILE* log_file = std::tmpfile();

  ~posting_world() { std::fclose(log_file); }

  std::string log_text() {
    std::fflush(log_file);
    std::rewind(log_file);
    std::string text;
    for (int c = std::fgetc(log_file); c != EOF; c = std::fgetc(log_file)) text.push_back(static_cast<char>(c));
    return text;
  }

  void store(const std::string& event_id, std::string body) {
    REQUIRE(inbox.store_blocking(inbox_event_of(tenant, event_id, std::move(body))) == stripe::inbox_outcome::stored);
  }

  // Runs a dispatcher until no stripe.post job is left waiting or running. `before_post` runs on
  // the DB thread pool as each job starts, before the real handler sees it.
  void work_all(std::uint32_t concurrency, std::function<void(const queue::job&)> before_post = {}) {
    asio::io_context io;
    asio::thread_pool blocking(4);
    bankworker::service::logger log(bankworker::service::log_level::warn, ::fileno(log_file));
    worker::dispatcher_settings settings;
    settings.concurrency = concurrency;
    settings.listen = false;
    settings.poll_interval = 20ms;
    worker::dispatcher dispatcher(io, blocking, jobs, nullptr, settings, log);
    worker::job_handler handler = stripe::stripe_post_handler(*connections, currencies, nullptr, &log);
    if (before_post) {
      // The dispatcher keeps this function, and so its captures, until it is destroyed.
      handler = [real = handler, before_post](queue::job job,
                                              worker::job_context context) -> asio::awaitable<queue::outcome> {
        co_await context.run_db([&] { before_post(job); });
        auto posting = real(std::move(job), context);
        co_return co_await std::move(posting);
      };
    }
    dispatcher.add_handler(std::string(stripe::stripe_post_kind), std::move(handler));
    asio::co_spawn(dispatcher.executor(), dispatcher.run(), [](std::exception_ptr) {});
    std::thread runner([&] { io.run(); });
    const bool finished = bankworker::test::eventually([&] { return count("state IN ('available', 'running', 'retryable')") == 0; }, 60s);
    dispatcher.stop();
    runner.join();
    blocking.join();
    REQUIRE(finished);
  }

  long count(const std::string& job_condition) {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1("SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.post' AND " + job_condition)[0].as<long>();
  }

  long scalar(const std::string& sql) {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1(sql)[0].as<long>();
  }
};

}  // namespace

TEST_CASE("stripe.post jobs running together share transactions, and each event is posted exactly once",
          "[pg][stripe]") {
  posting_world world;
  constexpr int events = 300;
  std::int64_t total = 0;
  for (int i = 0; i < events; ++i) {
    const std::int64_t amount = 100 + i;
    total += amount;
    world.store("evt_batch_" + std::to_string(i), payment_event("evt_batch_" + std::to_string(i),
                                                                "ch_batch_" + std::to_string(i), amount));
  }
  world.work_all(64);

  CHECK(world.count("state = 'succeeded'") == events);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == events);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == events);
  CHECK(world.scalar("SELECT count(DISTINCT idempotency_key) FROM bankworker.journal_entries") == events);
  CHECK(world.scalar("SELECT sum(amount_minor) FROM bankworker.journal_lines WHERE account_code = 'stripe.clearing'") ==
        total);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
  // Shared transactions: the 300 entries were written by far fewer commits than one per event,
  // and no batch had to be rolled back.
  const long commits = world.scalar("SELECT count(DISTINCT xmin::text) FROM bankworker.journal_entries");
  INFO("commits for " << events << " entries: " << commits);
  CHECK(commits <= events / 4);
  CHECK_THAT(world.log_text(), !Catch::Contains("rolled back"));
}

TEST_CASE("an entry conflict among jobs posted together fails only its own job, and the others post",
          "[pg][stripe]") {
  posting_world world;
  constexpr int events = 60;
  for (int i = 0; i < events; ++i) {
    world.store("evt_ok_" + std::to_string(i),
                payment_event("evt_ok_" + std::to_string(i), "ch_ok_" + std::to_string(i), 1000 + i));
  }
  // Two events about one charge that disagree on its amount, amid the others: the first posting
  // stands, the second is a conflict for a person to look at.
  world.store("evt_conflict_a", payment_event("evt_conflict_a", "ch_disputed", 500));
  world.store("evt_conflict_b", payment_event("evt_conflict_b", "ch_disputed", 700));
  for (int i = events; i < 2 * events; ++i) {
    world.store("evt_ok_" + std::to_string(i),
                payment_event("evt_ok_" + std::to_string(i), "ch_ok_" + std::to_string(i), 1000 + i));
  }
  world.work_all(64);

  CHECK(world.count("state = 'succeeded'") == 2 * events + 1);
  CHECK(world.count("state = 'failed'") == 1);
  CHECK(world.count("state = 'failed' AND failure = 'permanent' AND last_error LIKE '%ch_disputed:gross%different lines%'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 2 * events + 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'received'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == 2 * events + 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_disputed:gross'") == 1);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
}

TEST_CASE("two jobs for one event posted together post it once", "[pg][stripe]") {
  posting_world world;
  for (int i = 0; i < 20; ++i) {
    world.store("evt_twice_" + std::to_string(i),
                payment_event("evt_twice_" + std::to_string(i), "ch_twice_" + std::to_string(i), 300 + i));
  }
  // A second job for every event (an operator's retry, say), queued before any runs.
  {
    std::vector<std::string> ids;
    for (int i = 0; i < 20; ++i) ids.push_back("evt_twice_" + std::to_string(i));
    db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
      std::vector<std::string_view> views(ids.begin(), ids.end());
      stripe::enqueue_stripe_posts(tx, world.tenant, views);
    });
  }
  world.work_all(64);

  CHECK(world.count("state = 'succeeded'") == 40);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == 20);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_lines") == 40);
}

TEST_CASE("a job whose lease is lost while its posting is batched commits nothing, and the others post",
          "[pg][stripe]") {
  posting_world world;
  constexpr int events = 40;
  for (int i = 0; i < events; ++i) {
    world.store("evt_held_" + std::to_string(i),
                payment_event("evt_held_" + std::to_string(i), "ch_held_" + std::to_string(i), 200 + i));
  }
  world.store("evt_lost", payment_event("evt_lost", "ch_lost", 999));
  for (int i = events; i < 2 * events; ++i) {
    world.store("evt_held_" + std::to_string(i),
                payment_event("evt_held_" + std::to_string(i), "ch_held_" + std::to_string(i), 200 + i));
  }
  // An operator cancels evt_lost's job after it was claimed: the handler runs without a lease.
  world.work_all(64, [&](const queue::job& job) {
    if (job.payload_json.find("evt_lost") != std::string::npos) {
      const auto change = world.jobs.cancel(job.ref.id);
      REQUIRE(change);
      CHECK(change->changed);
    }
  });

  CHECK(world.count("state = 'succeeded'") == 2 * events);
  CHECK(world.count("state = 'cancelled'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'received'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE event_id = 'evt_lost' AND state = 'received'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_lost:gross'") == 0);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == 2 * events);
  // The batch that held it was rolled back, and the operator is told why.
  const std::string log = world.log_text();
  CHECK_THAT(log, Catch::Contains("stripe.post batch rolled back; its jobs post alone"));
  CHECK_THAT(log, Catch::Contains("a lease was lost"));
}
