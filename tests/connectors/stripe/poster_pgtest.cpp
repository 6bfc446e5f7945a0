// The posters (connectors/stripe/poster.cpp): the inbox is the posting queue. Real inbox, real
// posters and the real ledger on the private PostgreSQL; rounds run on the test's thread where the
// test must see each step, and on the posters' own threads where it races them.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include <pqxx/pqxx>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/intake.hpp"
#include "connectors/stripe/poster.hpp"
#include "connectors/stripe/posting_queue.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "db/currencies.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace std::chrono_literals;
using bankworker::test::scratch_database;
namespace db = bankworker::db;
namespace stripe = bankworker::stripe;
namespace ledger = bankworker::ledger;
using bankworker::core::uuid;

namespace {

// A payment_intent.succeeded event for charge `charge_id` of `amount` minor units of `currency`.
std::string payment_event(const std::string& event_id, const std::string& charge_id, std::int64_t amount,
                          const std::string& currency = "usd") {
  const std::string units = std::to_string(amount);
  return R"({"id":")" + event_id + R"(","object":"event","type":"payment_intent.succeeded","created":1763800000,)"
         R"("livemode":false,"data":{"object":{"id":"pi_)" + charge_id + R"(","object":"payment_intent","amount":)" +
         units + R"(,"amount_received":)" + units + R"(,"currency":")" + currency +
         R"(","created":1763800000,"latest_charge":")" + charge_id + R"(","status":"succeeded"}}})";
}

// That event as the webhook route hands it to the inbox: in its charge's posting lane.
stripe::inbox_event payment_inbox_event(const uuid& tenant, const std::string& event_id, const std::string& charge_id,
                                        std::int64_t amount) {
  stripe::inbox_event event;
  event.tenant = tenant;
  event.event_id = event_id;
  event.type = "payment_intent.succeeded";
  event.created_s = 1763800000;
  event.body = payment_event(event_id, charge_id, amount);
  event.posting_lane = stripe::posting_lane_of(charge_id);
  return event;
}

// A thin event (API v2) about a payment intent: it posts only once its related object is fetched.
std::string thin_intent_event(const std::string& event_id) {
  return R"({"id":")" + event_id + R"(","object":"v2.core.event","type":"v1.payment_intent.succeeded",)"
         R"("created":"2026-11-22T06:48:32.246Z","livemode":false,"context":null,"reason":null,)"
         R"("related_object":{"id":"pi_thin","type":"payment_intent","url":"/v1/payment_intents/pi_thin"}})";
}

struct poster_world {
  scratch_database database;
  std::unique_ptr<db::pool> connections = [&] {
    db::pool_settings settings;
    settings.connections = 8;
    return database.worker_pool(std::move(settings));
  }();
  std::unique_ptr<db::key_store> keys = bankworker::test::test_key_store();
  uuid tenant = ledger::create_tenant(*connections, *keys, "posting tenant", "test");
  bankworker::core::currency_table currencies = [&] {
    auto lease = connections->checkout();
    pqxx::read_transaction tx(lease.connection());
    return db::load_currencies(tx);
  }();
  stripe::inbox inbox{*connections, {}, stripe::inbox_hook{}};
  std::FILE* log_file = std::tmpfile();
  bankworker::service::logger log{bankworker::service::log_level::info, ::fileno(log_file)};

  ~poster_world() { std::fclose(log_file); }

  std::string log_text() {
    std::fflush(log_file);
    std::rewind(log_file);
    std::string text;
    for (int c = std::fgetc(log_file); c != EOF; c = std::fgetc(log_file)) text.push_back(static_cast<char>(c));
    return text;
  }

  void store(const uuid& to, const std::string& event_id, std::string body, std::string type = "payment_intent.succeeded") {
    stripe::inbox_event event;
    event.tenant = to;
    event.event_id = event_id;
    event.type = std::move(type);
    event.created_s = 1763800000;
    event.body = std::move(body);
    REQUIRE(inbox.store_blocking(std::move(event)) == stripe::inbox_outcome::stored);
  }

  // A poster that runs only when the test calls post_round.
  std::unique_ptr<stripe::poster> manual_poster(bool api_configured = false, std::uint32_t batch_max = 256) {
    stripe::poster_settings settings;
    settings.threads = 0;
    settings.batch_max = batch_max;
    settings.api_configured = api_configured;
    return std::make_unique<stripe::poster>(*connections, currencies, log, nullptr, settings);
  }

  long scalar(const std::string& sql) {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1(sql)[0].as<long>();
  }
  std::string text(const std::string& sql) {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    const pqxx::row row = tx.exec1(sql);
    return row[0].is_null() ? std::string("NULL") : row[0].as<std::string>();
  }
  void admin_exec(const std::string& sql) {
    auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec0(sql);
    tx.commit();
  }
};

// 10.000 KWD (Stripe's and ISO's unit for KWD are both thousandths).
constexpr std::int64_t kwd_amount = 10000;
// Its balance transaction as Stripe would expand it: 32.60 USD at 0.326, a 1.25 USD fee.
constexpr const char* balance_transaction =
    R"({"id":"txn_kwd","object":"balance_transaction","amount":3260,"currency":"usd","fee":125,"net":3135,)"
    R"("exchange_rate":0.326,"type":"charge","created":1763800000})";

// payment_intent.succeeded (API 2022-11-15 on): latest_charge is an id, so the leg's settlement is unknown.
std::string intent_event(const std::string& event_id) {
  return R"({"id":")" + event_id + R"(","object":"event","type":"payment_intent.succeeded","created":1763800000,)"
         R"("livemode":false,"data":{"object":{"id":"pi_kwd","object":"payment_intent","amount":10000,)"
         R"("amount_received":10000,"currency":"kwd","created":1763800000,"latest_charge":"ch_kwd",)"
         R"("status":"succeeded"}}})";
}

// charge.succeeded with its balance transaction expanded.
std::string charge_event(const std::string& event_id) {
  return R"({"id":")" + event_id + R"(","object":"event","type":"charge.succeeded","created":1763800060,)"
         R"("livemode":false,"data":{"object":{"id":"ch_kwd","object":"charge","amount":10000,)"
         R"("amount_captured":10000,"captured":true,"currency":"kwd","created":1763800000,)"
         R"("balance_transaction":)" + std::string(balance_transaction) + R"(}}})";
}

// stripe.clearing per currency, zero balances left out.
std::map<std::string, long> clearing(poster_world& world) {
  std::map<std::string, long> out;
  auto admin = world.database.connect_as_admin();
  pqxx::read_transaction tx(*admin);
  for (const auto& row : tx.exec("SELECT currency, sum(amount_minor) FROM bankworker.journal_lines"
                                 " WHERE account_code = 'stripe.clearing' GROUP BY currency")) {
    if (row[1].as<long>() != 0) out[row[0].as<std::string>()] = row[1].as<long>();
  }
  return out;
}

// Currencies whose lines do not sum to zero over the whole ledger (the trial balance).
constexpr const char* unbalanced_currencies_sql =
    "SELECT count(*) FROM (SELECT currency FROM bankworker.journal_lines GROUP BY currency"
    " HAVING sum(amount_minor) <> 0) unbalanced";

std::vector<stripe::event_summary> awaiting(poster_world& world) {
  return db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
    return stripe::list_events(tx, stripe::event_filter::awaiting_settlement, 10);
  });
}

}  // namespace

TEST_CASE("posters post the inbox in batches, each event once, with no job row", "[pg][stripe][poster]") {
  poster_world world;
  constexpr int events = 600;
  std::int64_t total = 0;
  for (int i = 0; i < events; ++i) {
    const std::string id = "evt_batch_" + std::to_string(i);
    total += 100 + i;
    world.store(world.tenant, id, payment_event(id, "ch_batch_" + std::to_string(i), 100 + i));
  }
  auto poster = world.manual_poster();
  std::uint64_t posted = 0;
  for (int round = 0; round < 10 && posted < events; ++round) posted += poster->post_round().posted;
  CHECK(posted == events);
  CHECK(poster->post_round().handled() == 0);  // nothing left

  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted' AND posted_at IS NOT NULL") ==
        events);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.jobs") == 0);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == events);
  CHECK(world.scalar("SELECT sum(amount_minor) FROM bankworker.journal_lines WHERE account_code = 'stripe.clearing'") ==
        total);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
  // 600 events in batches of 256: three commits, each marking its events with its entries.
  CHECK(world.scalar("SELECT count(DISTINCT xmin::text) FROM bankworker.journal_entries") == 3);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events e WHERE NOT EXISTS (SELECT 1 FROM "
                     "bankworker.journal_entries j WHERE j.xmin::text = e.xmin::text)") == 0);
}

TEST_CASE("a conflicting entry dead-letters only its own event; the batch's others post", "[pg][stripe][poster]") {
  poster_world world;
  for (int i = 0; i < 30; ++i) {
    const std::string id = "evt_ok_" + std::to_string(i);
    world.store(world.tenant, id, payment_event(id, "ch_ok_" + std::to_string(i), 1000 + i));
  }
  // Two events about one charge that disagree on its amount: the first posting stands.
  world.store(world.tenant, "evt_conflict_a", payment_event("evt_conflict_a", "ch_disputed", 500));
  world.store(world.tenant, "evt_conflict_b", payment_event("evt_conflict_b", "ch_disputed", 700));
  for (int i = 30; i < 60; ++i) {
    const std::string id = "evt_ok_" + std::to_string(i);
    world.store(world.tenant, id, payment_event(id, "ch_ok_" + std::to_string(i), 1000 + i));
  }
  auto poster = world.manual_poster();
  const stripe::poster_counts counts = poster->post_round();
  CHECK(counts.posted == 61);
  CHECK(counts.dead == 1);

  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 61);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_conflict_b'") == "failed");
  CHECK(world.scalar("SELECT attempts FROM bankworker.stripe_events WHERE event_id = 'evt_conflict_b'") == 1);
  CHECK_THAT(world.text("SELECT last_error FROM bankworker.stripe_events WHERE event_id = 'evt_conflict_b'"),
             Catch::Contains("ch_disputed:gross") && Catch::Contains("different lines"));
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_disputed:gross'") == 1);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
  CHECK_THAT(world.log_text(), Catch::Contains("stripe posting batch rolled back; its events post one at a time"));

  // The operator retries it: it fails again (the first posting still stands) and is dead again.
  db::with_tenant(*world.connections, world.tenant,
                  [&](pqxx::work& tx) { REQUIRE(stripe::retry_failed_event(tx, "evt_conflict_b")); });
  CHECK(world.scalar("SELECT attempts FROM bankworker.stripe_events WHERE event_id = 'evt_conflict_b'") == 0);
  CHECK(poster->post_round().dead == 1);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_conflict_b'") == "failed");
}

TEST_CASE("a posting that fails waits its backoff, counts its attempts and is dead-lettered after the last",
          "[pg][stripe][poster]") {
  poster_world world;
  world.store(world.tenant, "evt_bad", payment_event("evt_bad", "ch_bad", 500, "qqq"));
  world.store(world.tenant, "evt_good", payment_event("evt_good", "ch_good", 700));
  auto poster = world.manual_poster();
  stripe::poster_counts counts = poster->post_round();
  CHECK(counts.posted == 1);
  CHECK(counts.retried == 1);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_bad'") == "received");
  CHECK(world.scalar("SELECT attempts FROM bankworker.stripe_events WHERE event_id = 'evt_bad'") == 1);
  CHECK_THAT(world.text("SELECT last_error FROM bankworker.stripe_events WHERE event_id = 'evt_bad'"),
             Catch::Contains("currency"));
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE event_id = 'evt_bad' AND "
                     "available_at > now() + interval '5 seconds'") == 1);
  // Not due yet: the next round leaves it alone.
  CHECK(poster->post_round().handled() == 0);
  // Each time its backoff has passed it is tried again, until its attempts run out.
  for (int attempt = 2; attempt <= stripe::posting_attempts_max; ++attempt) {
    world.admin_exec("UPDATE bankworker.stripe_events SET available_at = now() - interval '1 second' "
                     "WHERE event_id = 'evt_bad'");
    counts = poster->post_round();
    CHECK(counts.handled() == 1);
  }
  CHECK(counts.dead == 1);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_bad'") == "failed");
  CHECK(world.scalar("SELECT attempts FROM bankworker.stripe_events WHERE event_id = 'evt_bad'") ==
        stripe::posting_attempts_max);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == 1);
  // Visible to operators among the tenant's failed events.
  const auto failed = db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
    return stripe::list_events(tx, stripe::event_filter::failed, 10);
  });
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].event_id == "evt_bad");
  CHECK(failed[0].attempts == stripe::posting_attempts_max);
}

TEST_CASE("one tenant's backlog does not starve another's", "[pg][stripe][poster]") {
  poster_world world;
  const uuid other = ledger::create_tenant(*world.connections, *world.keys, "small tenant", "test");
  for (int i = 0; i < 400; ++i) {
    const std::string id = "evt_big_" + std::to_string(i);
    world.store(world.tenant, id, payment_event(id, "ch_big_" + std::to_string(i), 100));
  }
  for (int i = 0; i < 5; ++i) {
    const std::string id = "evt_small_" + std::to_string(i);
    world.store(other, id, payment_event(id, "ch_small_" + std::to_string(i), 100));
  }
  // Batches of 50: one round posts one batch of each tenant, whatever the other's backlog.
  auto poster = world.manual_poster(false, 50);
  CHECK(poster->post_round().posted == 55);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE tenant_id = '" + other.to_string() +
                     "' AND state = 'posted'") == 5);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE tenant_id = '" + world.tenant.to_string() +
                     "' AND state = 'posted'") == 50);
  // In each tenant, oldest first.
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted' AND event_id LIKE "
                     "'evt_big_%' AND substr(event_id, 9)::int >= 50") == 0);
}

TEST_CASE("posters in several processes racing a live inbox post every event exactly once", "[pg][stripe][poster]") {
  poster_world world;
  stripe::poster_settings settings;
  settings.threads = 2;
  settings.batch_max = 32;
  settings.idle_poll = 20ms;
  // Two "hosts" of two posters each, on one database.
  stripe::poster first(*world.connections, world.currencies, world.log, nullptr, settings);
  stripe::poster second(*world.connections, world.currencies, world.log, nullptr, settings);
  constexpr int events = 800;
  std::thread producer([&] {
    for (int i = 0; i < events; ++i) {
      const std::string id = "evt_race_" + std::to_string(i);
      world.store(world.tenant, id, payment_event(id, "ch_race_" + std::to_string(i), 100 + i));
      if (i % 50 == 0) first.wake();
    }
  });
  producer.join();
  const bool done = bankworker::test::eventually(
      [&] { return world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == events; }, 60s);
  first.stop();
  second.stop();
  REQUIRE(done);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == events);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE attempts > 0") == 0);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
}

TEST_CASE("a commit's tenants are posted at once, not at the next poll, and a backlog drains without full rounds",
          "[pg][stripe][poster]") {
  poster_world world;
  stripe::poster_settings settings;
  settings.threads = 2;
  settings.batch_max = 16;
  settings.idle_poll = std::chrono::hours(1);  // after the start-up round, only wakes move the posters
  stripe::poster posters(*world.connections, world.currencies, world.log, nullptr, settings);
  // The inbox hands each commit's tenants to the posters, as bankworker run wires them.
  stripe::inbox woken_inbox{*world.connections, {}, stripe::inbox_hook{},
                            [&](std::span<const stripe::tenant_lane> lanes) { posters.wake(lanes); }};
  std::this_thread::sleep_for(200ms);  // the start-up round has found nothing
  constexpr int events = 100;           // more than six batches: `more` keeps the tenant woken
  for (int i = 0; i < events; ++i) {
    const std::string id = "evt_woken_" + std::to_string(i);
    REQUIRE(woken_inbox.store_blocking(payment_inbox_event(world.tenant, id, "ch_woken_" + std::to_string(i), 100 + i)) ==
            stripe::inbox_outcome::stored);
  }
  const bool done = bankworker::test::eventually(
      [&] { return world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == events; }, 20s);
  posters.stop();
  REQUIRE(done);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == events);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
}

TEST_CASE("a thin event is dead-lettered without an API, and handed to a stripe.post job with one",
          "[pg][stripe][poster]") {
  poster_world world;
  world.store(world.tenant, "evt_thin_a", thin_intent_event("evt_thin_a"), "v1.payment_intent.succeeded");
  CHECK(world.manual_poster(false)->post_round().dead == 1);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_thin_a'") == "failed");
  CHECK_THAT(world.text("SELECT last_error FROM bankworker.stripe_events WHERE event_id = 'evt_thin_a'"),
             Catch::Contains("no Stripe API is configured"));

  world.store(world.tenant, "evt_thin_b", thin_intent_event("evt_thin_b"), "v1.payment_intent.succeeded");
  CHECK(world.manual_poster(true)->post_round().handed_off == 1);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_thin_b'") == "fetching");
  CHECK(world.scalar("SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.post' AND "
                     "payload->>'event_id' = 'evt_thin_b' AND state = 'available'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.jobs") == 1);
}

// Postings awaiting settlement (connectors/stripe/settlement_marks.hpp, issue #16), completed by a
// later event through the posters with no Stripe API. A payment in KWD settled in USD arrives first
// without its balance transaction: its presentment side posts and the event is marked; the charge's
// own event, carrying the balance transaction, then posts the conversion and the fee once and
// clears the mark. (The completion by a key and the recovery job, against the Stripe simulator, is
// in api_jobs_pgtest.cpp.)
TEST_CASE("a KWD payment without its balance transaction posts its presentment side and awaits settlement; the "
          "charge's event carrying it completes the posting once and clears the mark",
          "[pg][stripe][poster][settlement]") {
  poster_world world;
  auto poster = world.manual_poster();
  world.store(world.tenant, "evt_intent", intent_event("evt_intent"));
  CHECK(poster->post_round().posted == 1);

  // The presentment side only: 10.000 KWD in stripe.clearing, no USD guessed, no fee.
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:gross'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key IN ('ch_kwd:fx', 'ch_kwd:fee')") == 0);
  CHECK(clearing(world) == std::map<std::string, long>{{"KWD", kwd_amount}});
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_lines WHERE currency = 'USD'") == 0);
  CHECK(world.scalar(unbalanced_currencies_sql) == 0);
  // Marked, and visible to operators: the listing names the leg, the gauge counts the event.
  const std::vector<stripe::event_summary> listed = awaiting(world);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].event_id == "evt_intent");
  CHECK(listed[0].state == "posted");
  CHECK(listed[0].settlement_awaited_since.has_value());
  CHECK(listed[0].settlement_awaited == std::vector<std::string>{"ch_kwd:gross"});
  CHECK(world.scalar(stripe::settlement_gauges_sql) == 1);

  // The charge's own event brings the balance transaction: the conversion and the fee post, the
  // mark goes, in the same transaction.
  world.store(world.tenant, "evt_charge", charge_event("evt_charge"), "charge.succeeded");
  CHECK(poster->post_round().posted == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:gross'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:fx'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:fee'") == 1);
  CHECK(world.scalar("SELECT count(DISTINCT xmin::text) FROM bankworker.stripe_events e WHERE e.event_id = 'evt_charge'"
                     " OR e.event_id = 'evt_intent'") == 1);  // the mark cleared with the charge's posting
  // Stripe's balance moved 31.35 USD net (the balance transaction's net), and nothing else.
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 3135}});
  CHECK(world.scalar("SELECT sum(amount_minor) FROM bankworker.journal_lines WHERE account_code = 'stripe.fees'") == 125);
  CHECK(world.scalar(unbalanced_currencies_sql) == 0);
  CHECK(awaiting(world).empty());
  CHECK(world.scalar(stripe::settlement_gauges_sql) == 0);

  // Replaying both events (an operator's re-post, a re-delivery) changes nothing, and the intent's
  // re-post finds its leg settled: no mark comes back.
  const long entries = world.scalar("SELECT count(*) FROM bankworker.journal_entries");
  world.admin_exec("UPDATE bankworker.stripe_events SET state = 'received'");
  CHECK(poster->post_round().posted == 2);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == entries);
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 3135}});
  CHECK(awaiting(world).empty());
}

TEST_CASE("an event whose balance transaction is already in the ledger is not marked awaiting settlement",
          "[pg][stripe][poster][settlement]") {
  poster_world world;
  auto poster = world.manual_poster();
  SECTION("the charge's event posted first, in a round of its own") {
    world.store(world.tenant, "evt_charge", charge_event("evt_charge"), "charge.succeeded");
    CHECK(poster->post_round().posted == 1);
    world.store(world.tenant, "evt_intent", intent_event("evt_intent"));
    CHECK(poster->post_round().posted == 1);
  }
  SECTION("both in one batch, the intent first") {
    world.store(world.tenant, "evt_intent", intent_event("evt_intent"));
    world.store(world.tenant, "evt_charge", charge_event("evt_charge"), "charge.succeeded");
    CHECK(poster->post_round().posted == 2);
  }
  CHECK(awaiting(world).empty());
  CHECK(world.scalar(stripe::settlement_gauges_sql) == 0);
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 3135}});
}

TEST_CASE("the awaiting-settlement gauges cost the same however many events wait: the count stops at 10,000, "
          "the oldest age stays exact across tenants",
          "[pg][stripe][settlement]") {
  poster_world world;
  const uuid second = ledger::create_tenant(*world.connections, *world.keys, "second tenant", "test");
  // The walk goes tenant by tenant in uuid order: the oldest wait belongs to the later tenant.
  const bool second_later = second.to_string() > world.tenant.to_string();
  const uuid& earlier = second_later ? world.tenant : second;
  const uuid& later = second_later ? second : world.tenant;
  const std::string awaiting_rows =
      "INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, livemode, created_at, body, state, posted_at,"
      " settlement_awaited_since, settlement_awaited)"
      " SELECT $T$, 'evt_' || i, 'payment_intent.succeeded', false, now(), '{}', 'posted', now(), now() - $AGE$,"
      " ARRAY['ch_' || i || ':gross'] FROM generate_series(1, $N$) AS i";
  const auto rows = [&](const uuid& tenant, const std::string& age, int count) {
    std::string sql = awaiting_rows;
    sql.replace(sql.find("$T$"), 3, "'" + tenant.to_string() + "'");
    sql.replace(sql.find("$AGE$"), 5, age);
    sql.replace(sql.find("$N$"), 3, std::to_string(count));
    return sql;
  };
  world.admin_exec(rows(earlier, "i * interval '100 ms'", 10050));  // the last waits 1,005 s
  world.admin_exec(rows(later, "interval '2 days'", 3));
  world.admin_exec("ANALYZE bankworker.stripe_events");

  CHECK(world.scalar("SELECT events FROM bankworker.stripe_settlement_gauges()") == stripe::settlement_gauge_count_max);
  const long oldest_s = world.scalar("SELECT oldest_s FROM bankworker.stripe_settlement_gauges()");
  CHECK(oldest_s >= 2 * 86400);
  CHECK(oldest_s < 2 * 86400 + 600);

  // The later tenant's events settle: the oldest is the earlier tenant's; below the cap the count is exact.
  world.admin_exec("UPDATE bankworker.stripe_events SET settlement_awaited = NULL, settlement_awaited_since = NULL"
                   " WHERE tenant_id = '" + later.to_string() + "' OR event_id NOT IN ('evt_1', 'evt_2')");
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE settlement_awaited IS NOT NULL") == 2);
  CHECK(world.scalar("SELECT events FROM bankworker.stripe_settlement_gauges()") == 2);
  const long left_s = world.scalar("SELECT oldest_s FROM bankworker.stripe_settlement_gauges()");
  CHECK(left_s >= 0);
  CHECK(left_s < 600);
}

// Migration 0046: a busy tenant's events post in posting_lanes streams side by side, one poster per
// lane at a time. Here another poster (this test, holding one lane's lock as a poster's transaction
// would) keeps one lane busy: the tenant's other lanes post regardless, that lane's events wait,
// untouched and in order, and post once it is free.
TEST_CASE("a tenant's posting lanes post side by side; a lane another poster holds waits alone",
          "[pg][stripe][poster]") {
  poster_world world;
  constexpr int events = 64;
  std::map<int, int> per_lane;
  for (int i = 0; i < events; ++i) {
    const std::string id = "evt_lane_" + std::to_string(i);
    stripe::inbox_event event = payment_inbox_event(world.tenant, id, "ch_lane_" + std::to_string(i), 100 + i);
    ++per_lane[event.posting_lane];
    REQUIRE(world.inbox.store_blocking(std::move(event)) == stripe::inbox_outcome::stored);
  }
  REQUIRE(per_lane.size() >= 2);  // 64 charges fill more than one lane
  const int held_lane = per_lane.begin()->first;
  const int held_events = per_lane.begin()->second;
  CHECK(world.scalar("SELECT count(DISTINCT posting_lane) FROM bankworker.stripe_events") ==
        static_cast<long>(per_lane.size()));

  auto holder = world.database.connect_as_admin();
  pqxx::work held(*holder);
  held.exec_params("SELECT pg_advisory_xact_lock(hashtextextended('stripe.post:' || $1 || '/' || $2::int, 0))",
                   world.tenant.to_string(), held_lane);
  auto poster = world.manual_poster();
  CHECK(poster->post_round().posted == static_cast<std::uint64_t>(events - held_events));
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'received' AND posting_lane = " +
                     std::to_string(held_lane)) == held_events);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'received'") == held_events);
  held.commit();  // the other poster is done with its lane

  CHECK(poster->post_round().posted == static_cast<std::uint64_t>(held_events));
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == events);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == events);
  CHECK(world.scalar("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines") == 0);
}

// batch_rest: a lane whose batch was not full rests before its next one (so batches fill under
// load), and an event that arrives meanwhile still posts once the rest is over.
TEST_CASE("a lane rests batch_rest after a batch that was not full; what arrives meanwhile posts after it",
          "[pg][stripe][poster]") {
  poster_world world;
  stripe::poster_settings settings;
  settings.threads = 1;
  settings.idle_poll = std::chrono::hours(1);
  settings.batch_rest = 2s;
  stripe::poster posters(*world.connections, world.currencies, world.log, nullptr, settings);
  stripe::inbox woken_inbox{*world.connections, {}, stripe::inbox_hook{},
                            [&](std::span<const stripe::tenant_lane> lanes) { posters.wake(lanes); }};
  std::this_thread::sleep_for(200ms);  // the start-up round has found nothing
  const auto store = [&](const std::string& id) {  // one charge: one lane
    REQUIRE(woken_inbox.store_blocking(payment_inbox_event(world.tenant, id, "ch_rest", 100)) ==
            stripe::inbox_outcome::stored);
  };
  const auto posted = [&] { return world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'"); };
  store("evt_rest_1");
  REQUIRE(bankworker::test::eventually([&] { return posted() == 1; }, 10s));  // a lane at rest posts at once
  const auto first_posted = std::chrono::steady_clock::now();
  store("evt_rest_2");
  std::this_thread::sleep_for(500ms);
  if (std::chrono::steady_clock::now() - first_posted < 1500ms) CHECK(posted() == 1);  // resting
  CHECK(bankworker::test::eventually([&] { return posted() == 2; }, 10s));
  CHECK(std::chrono::steady_clock::now() - first_posted >= 1900ms);
  posters.stop();
}

// Posting at intake (connectors/stripe/intake.hpp): the inbox as the webhook route has it.
namespace {

struct intake_world : poster_world {
  std::atomic<std::uint64_t> counted_posted{0};
  std::atomic<std::uint64_t> counted_ignored{0};
  std::mutex woken_mutex;
  std::vector<stripe::tenant_lane> woken;  // what the inbox asked the posters to post
  stripe::intake_planner planner{currencies, log, false, [this](const stripe::poster_counts& counts) {
                                   counted_posted += counts.posted;
                                   counted_ignored += counts.ignored;
                                 }};
  stripe::inbox posting_inbox{*connections,
                              [this] {
                                stripe::inbox_settings settings;
                                settings.post_at_intake = &planner;
                                return settings;
                              }(),
                              stripe::inbox_hook{}, [this](std::span<const stripe::tenant_lane> lanes) {
                                std::lock_guard lock(woken_mutex);
                                woken.insert(woken.end(), lanes.begin(), lanes.end());
                              }};

  stripe::inbox_outcome deliver(stripe::inbox_event event) { return posting_inbox.store_blocking(std::move(event)); }
  stripe::inbox_outcome deliver(const std::string& event_id, const std::string& charge_id, std::int64_t amount) {
    return deliver(payment_inbox_event(tenant, event_id, charge_id, amount));
  }
  std::string state_of(const std::string& event_id) {
    return text("SELECT state FROM bankworker.stripe_events WHERE event_id = '" + event_id + "'");
  }
  std::size_t woken_count() {
    std::lock_guard lock(woken_mutex);
    return woken.size();
  }
};

// A charge id (prefix + n) whose events post in `lane`.
std::string charge_in_lane(std::uint8_t lane, const std::string& prefix) {
  for (int n = 0;; ++n) {
    std::string id = prefix + std::to_string(n);
    if (stripe::posting_lane_of(id) == lane) return id;
  }
}

}  // namespace

TEST_CASE("the inbox posts an event as it stores it when its body is all the rules need; the posters find nothing",
          "[pg][stripe][intake]") {
  intake_world world;
  REQUIRE(world.deliver("evt_now", "ch_now", 1250) == stripe::inbox_outcome::stored);
  // Posted by the statement that stored it: the entry, its lines, the state and the awaited leg.
  CHECK(world.state_of("evt_now") == "posted");
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE posted_at IS NOT NULL") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_now:gross'") == 1);
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 1250}});
  CHECK(world.scalar(unbalanced_currencies_sql) == 0);
  CHECK(world.text("SELECT array_to_string(settlement_awaited, ',') FROM bankworker.stripe_events") == "ch_now:gross");
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE settlement_awaited_since IS NOT NULL") == 1);
  CHECK(world.counted_posted == 1);
  CHECK(world.woken_count() == 0);  // nothing was left for the posters

  // Its redelivery is a duplicate; another event about the same charge posts, the entry stays one.
  CHECK(world.deliver("evt_now", "ch_now", 1250) == stripe::inbox_outcome::duplicate);
  REQUIRE(world.deliver("evt_now_again", "ch_now", 1250) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_now_again") == "posted");
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == 1);
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 1250}});
  CHECK(world.counted_posted == 2);

  // An event that moves no money is ignored at once.
  stripe::inbox_event customer;
  customer.tenant = world.tenant;
  customer.event_id = "evt_customer";
  customer.type = "customer.created";
  customer.body = R"({"id":"evt_customer","object":"event","type":"customer.created","created":1763800000,)"
                  R"("livemode":false,"data":{"object":{"id":"cus_1","object":"customer"}}})";
  REQUIRE(world.deliver(std::move(customer)) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_customer") == "ignored");
  CHECK(world.counted_ignored == 1);

  // A leg whose fee is in the ledger already is settled: the event that posts it awaits nothing.
  db::with_tenant(*world.connections, world.tenant, [](pqxx::work& tx) {
    const ledger::entry fee{"ch_paid:fee", "fee", 1763800000, "test",
                            {{"stripe.fees", 30, "USD"}, {"stripe.clearing", -30, "USD"}}};
    ledger::post_entries(tx, {&fee});
  });
  REQUIRE(world.deliver("evt_paid", "ch_paid", 1000) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_paid") == "posted");
  CHECK(world.text("SELECT settlement_awaited FROM bankworker.stripe_events WHERE event_id = 'evt_paid'") == "NULL");

  auto poster = world.manual_poster();
  CHECK(poster->post_round().handled() == 0);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'received'") == 0);
}

TEST_CASE("a lane a poster holds, or where an event waits, keeps its events for the posters, in arrival order",
          "[pg][stripe][intake]") {
  intake_world world;
  const std::uint8_t lane = stripe::posting_lane_of("ch_busy");
  const std::string same_lane = charge_in_lane(lane, "ch_next_");
  const std::string other_lane =
      charge_in_lane(static_cast<std::uint8_t>((lane + 1) % stripe::posting_lanes), "ch_free_");
  {
    // A poster (another process's) is posting the lane: the event is stored received, the posters woken.
    auto holder = world.database.connect_as_admin();
    pqxx::work held(*holder);
    held.exec_params("SELECT pg_advisory_xact_lock(hashtextextended('stripe.post:' || $1 || '/' || $2::int, 0))",
                     world.tenant.to_string(), static_cast<int>(lane));
    REQUIRE(world.deliver("evt_busy", "ch_busy", 300) == stripe::inbox_outcome::stored);
    CHECK(world.state_of("evt_busy") == "received");
    CHECK(world.woken_count() == 1);
    held.commit();
  }
  // Nobody holds the lane now, but evt_busy waits in it: a later event of the lane waits behind it.
  REQUIRE(world.deliver("evt_next", same_lane, 400) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_next") == "received");
  // Another lane is free: its event posts at once.
  REQUIRE(world.deliver("evt_free", other_lane, 500) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_free") == "posted");
  CHECK(world.counted_posted == 1);

  // The posters post the two waiting, oldest first (one batch, in arrival order), ...
  auto poster = world.manual_poster();
  CHECK(poster->post_round().posted == 2);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 3);
  // ... and then the lane is free again.
  REQUIRE(world.deliver("evt_later", charge_in_lane(lane, "ch_later_"), 600) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_later") == "posted");
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 1800}});
  CHECK(world.scalar(unbalanced_currencies_sql) == 0);
}

TEST_CASE("in a batch, an event the rules cannot post from its body holds back the later events of its lane",
          "[pg][stripe][intake]") {
  intake_world world;
  const std::uint8_t lane = stripe::posting_lane_of("ch_bad");
  stripe::inbox_event bad = payment_inbox_event(world.tenant, "evt_bad", "ch_bad", 500);
  bad.body = payment_event("evt_bad", "ch_bad", 500, "qqq");  // a currency the rules refuse: a poster retries it
  const stripe::inbox_event behind =
      payment_inbox_event(world.tenant, "evt_behind", charge_in_lane(lane, "ch_b_"), 600);
  const std::string beside_charge =
      charge_in_lane(static_cast<std::uint8_t>((lane + 2) % stripe::posting_lanes), "ch_s_");
  const stripe::inbox_event beside = payment_inbox_event(world.tenant, "evt_beside", beside_charge, 700);
  const stripe::inbox_event* batch[] = {&bad, &behind, &beside};
  stripe::intake_plan plan = world.planner.plan(batch);
  CHECK(plan.states.finish() == R"({NULL,NULL,"posted"})");
  CHECK(plan.entries.entries == 1);
  CHECK(plan.entry_events.finish() == R"({"evt_beside"})");
  CHECK(plan.legs.finish() == R"({NULL,NULL,")" + beside_charge + R"(:gross"})");
  CHECK(plan.fees.finish() == R"({NULL,NULL,")" + beside_charge + R"(:fee"})");

  // Stored that way, evt_bad waits for a poster and evt_behind behind it.
  for (const stripe::inbox_event* event : batch) REQUIRE(world.deliver(*event) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_bad") == "received");
  CHECK(world.state_of("evt_behind") == "received");
  CHECK(world.state_of("evt_beside") == "posted");
}

TEST_CASE("an entry posted before with other lines: the batch is stored without posting and the posters record the "
          "conflict on its event",
          "[pg][stripe][intake]") {
  intake_world world;
  db::with_tenant(*world.connections, world.tenant, [](pqxx::work& tx) {
    ledger::ensure_chart(tx);
    const ledger::entry first{"ch_clash:gross", "first", 1763800000, "evt_first",
                              {{"stripe.clearing", 999, "USD"}, {"revenue", -999, "USD"}}};
    ledger::post_entries(tx, {&first});
  });
  REQUIRE(world.deliver("evt_clash", "ch_clash", 500) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_clash") == "received");
  CHECK(world.woken_count() == 1);
  CHECK(world.counted_posted == 0);
  CHECK_THAT(world.log_text(), Catch::Contains("not posted at intake") && Catch::Contains("ch_clash:gross"));

  auto poster = world.manual_poster();
  CHECK(poster->post_round().dead == 1);
  CHECK(world.state_of("evt_clash") == "failed");
  CHECK_THAT(world.text("SELECT last_error FROM bankworker.stripe_events WHERE event_id = 'evt_clash'"),
             Catch::Contains("ch_clash:gross") && Catch::Contains("different lines"));
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 999}});
}

TEST_CASE("an event that settles a leg is left to the posters, which clear the mark its payment left at intake",
          "[pg][stripe][intake][settlement]") {
  intake_world world;
  stripe::inbox_event intent;
  intent.tenant = world.tenant;
  intent.event_id = "evt_intent";
  intent.type = "payment_intent.succeeded";
  intent.body = intent_event("evt_intent");
  intent.posting_lane = stripe::posting_lane_of("ch_kwd");
  stripe::inbox_event charge = intent;
  charge.event_id = "evt_charge";
  charge.type = "charge.succeeded";
  charge.body = charge_event("evt_charge");
  REQUIRE(world.deliver(std::move(intent)) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_intent") == "posted");
  CHECK(awaiting(world).size() == 1);
  REQUIRE(world.deliver(std::move(charge)) == stripe::inbox_outcome::stored);
  CHECK(world.state_of("evt_charge") == "received");

  auto poster = world.manual_poster();
  CHECK(poster->post_round().posted == 1);
  CHECK(awaiting(world).empty());
  CHECK(clearing(world) == std::map<std::string, long>{{"USD", 3135}});
  CHECK(world.scalar(unbalanced_currencies_sql) == 0);
}

TEST_CASE("a batch of several tenants' events posts each tenant's at intake in its own scope",
          "[pg][stripe][intake]") {
  intake_world world;
  const uuid other = ledger::create_tenant(*world.connections, *world.keys, "second tenant", "test");
  // Hold the committer's first batch on a row the test inserts and has not committed, so that the
  // next events, of both tenants, queue up and go as one batch.
  auto blocker = world.database.connect_as_admin();
  pqxx::work hold(*blocker);
  // (Ignored: a received one would hold back its lane's later events, as it should.)
  hold.exec_params0("INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, livemode, created_at, body,"
                    " state) VALUES ($1, 'evt_block', 'payment_intent.succeeded', false, now(), '{}', 'ignored')",
                    world.tenant.to_string());
  std::thread first([&] { CHECK(world.deliver("evt_block", "ch_block", 100) == stripe::inbox_outcome::duplicate); });
  REQUIRE(bankworker::test::eventually([&] {
    return world.scalar("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'") > 0;
  }));
  std::vector<std::thread> senders;
  for (int i = 0; i < 3; ++i) {
    senders.emplace_back([&, i] {
      const std::string n = std::to_string(i);
      CHECK(world.deliver("evt_a" + n, "ch_a" + n, 1000 + i) == stripe::inbox_outcome::stored);
    });
    senders.emplace_back([&, i] {
      const std::string n = std::to_string(i);
      CHECK(world.deliver(payment_inbox_event(other, "evt_b" + n, "ch_b" + n, 2000 + i)) ==
            stripe::inbox_outcome::stored);
    });
  }
  std::this_thread::sleep_for(500ms);  // the six are queued behind the held batch
  hold.commit();
  first.join();
  for (std::thread& sender : senders) sender.join();
  CHECK(world.posting_inbox.stats().batches == 2);  // the held one, then all six together

  CHECK(world.scalar("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 6);
  CHECK(world.counted_posted == 6);
  // Each tenant's entries are its own (the second tenant's chart was made in that batch).
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE tenant_id = '" + world.tenant.to_string() +
                     "' AND idempotency_key LIKE 'ch_a%'") == 3);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE tenant_id = '" + other.to_string() +
                     "' AND idempotency_key LIKE 'ch_b%'") == 3);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries e JOIN bankworker.stripe_events s"
                     " ON s.event_id = e.source WHERE s.tenant_id <> e.tenant_id") == 0);
  CHECK(world.scalar(unbalanced_currencies_sql) == 0);
}
