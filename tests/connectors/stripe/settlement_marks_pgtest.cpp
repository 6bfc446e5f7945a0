// Postings awaiting settlement (connectors/stripe/settlement_marks.hpp, issue #16), completed by a
// later event: the real inbox, the real posters with no Stripe API, the real ledger on the private
// PostgreSQL. A payment in KWD settled in USD arrives first without its balance transaction: its
// presentment side posts and the event is marked; the charge's own event, carrying the balance
// transaction, then posts the conversion and the fee once and clears the mark. (The completion
// by a key and the recovery job, against the Stripe simulator, is in api_jobs_pgtest.cpp.)
#include <catch2/catch.hpp>

#include <map>

#include <pqxx/pqxx>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/poster.hpp"
#include "connectors/stripe/posting_queue.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "db/currencies.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using bankworker::test::scratch_database;
namespace db = bankworker::db;
namespace stripe = bankworker::stripe;
namespace ledger = bankworker::ledger;
using bankworker::core::uuid;

namespace {

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

struct settlement_world {
  scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool(db::pool_settings{});
  std::unique_ptr<db::key_store> keys = bankworker::test::test_key_store();
  uuid tenant = ledger::create_tenant(*connections, *keys, "settlement tenant", "test");
  bankworker::core::currency_table currencies = [&] {
    auto lease = connections->checkout();
    pqxx::read_transaction tx(lease.connection());
    return db::load_currencies(tx);
  }();
  stripe::inbox inbox{*connections, {}, stripe::inbox_hook{}};
  std::FILE* log_file = std::tmpfile();
  bankworker::service::logger log{bankworker::service::log_level::info, ::fileno(log_file)};
  std::unique_ptr<stripe::poster> poster = [&] {
    stripe::poster_settings settings;
    settings.threads = 0;  // rounds run when the test says
    return std::make_unique<stripe::poster>(*connections, currencies, log, nullptr, settings);
  }();

  ~settlement_world() {
    poster.reset();
    std::fclose(log_file);
  }

  void store(const std::string& event_id, std::string body, std::string type) {
    stripe::inbox_event event;
    event.tenant = tenant;
    event.event_id = event_id;
    event.type = std::move(type);
    event.created_s = 1763800000;
    event.body = std::move(body);
    REQUIRE(inbox.store_blocking(std::move(event)) == stripe::inbox_outcome::stored);
  }
  long scalar(const std::string& sql) {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1(sql)[0].as<long>();
  }
  void admin_exec(const std::string& sql) {
    auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec0(sql);
    tx.commit();
  }
  // stripe.clearing per currency, zero balances left out.
  std::map<std::string, long> clearing() {
    std::map<std::string, long> out;
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    for (const auto& row : tx.exec("SELECT currency, sum(amount_minor) FROM bankworker.journal_lines"
                                   " WHERE account_code = 'stripe.clearing' GROUP BY currency")) {
      if (row[1].as<long>() != 0) out[row[0].as<std::string>()] = row[1].as<long>();
    }
    return out;
  }
  // Currencies whose lines do not sum to zero over the whole ledger (the trial balance).
  long unbalanced_currencies() {
    return scalar("SELECT count(*) FROM (SELECT currency FROM bankworker.journal_lines GROUP BY currency"
                  " HAVING sum(amount_minor) <> 0) unbalanced");
  }
  std::vector<stripe::event_summary> awaiting() {
    return db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      return stripe::list_events(tx, stripe::event_filter::awaiting_settlement, 10);
    });
  }
  long awaiting_gauge() {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1(stripe::settlement_gauges_sql)[0].as<long>();
  }
};

}  // namespace

TEST_CASE("a KWD payment without its balance transaction posts its presentment side and awaits settlement; the "
          "charge's event carrying it completes the posting once and clears the mark",
          "[pg][stripe][poster][settlement]") {
  settlement_world world;
  world.store("evt_intent", intent_event("evt_intent"), "payment_intent.succeeded");
  CHECK(world.poster->post_round().posted == 1);

  // The presentment side only: 10.000 KWD in stripe.clearing, no USD guessed, no fee.
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:gross'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key IN ('ch_kwd:fx', 'ch_kwd:fee')") == 0);
  CHECK(world.clearing() == std::map<std::string, long>{{"KWD", kwd_amount}});
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_lines WHERE currency = 'USD'") == 0);
  CHECK(world.unbalanced_currencies() == 0);
  // Marked, and visible to operators: the listing names the leg, the gauge counts the event.
  std::vector<stripe::event_summary> awaiting = world.awaiting();
  REQUIRE(awaiting.size() == 1);
  CHECK(awaiting[0].event_id == "evt_intent");
  CHECK(awaiting[0].state == "posted");
  CHECK(awaiting[0].settlement_awaited_since.has_value());
  CHECK(awaiting[0].settlement_awaited == std::vector<std::string>{"ch_kwd:gross"});
  CHECK(world.awaiting_gauge() == 1);

  // The charge's own event brings the balance transaction: the conversion and the fee post, the
  // mark goes, in the same transaction.
  world.store("evt_charge", charge_event("evt_charge"), "charge.succeeded");
  CHECK(world.poster->post_round().posted == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:gross'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:fx'") == 1);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = 'ch_kwd:fee'") == 1);
  CHECK(world.scalar("SELECT count(DISTINCT xmin::text) FROM bankworker.stripe_events e WHERE e.event_id = 'evt_charge'"
                     " OR e.event_id = 'evt_intent'") == 1);  // the mark cleared with the charge's posting
  // Stripe's balance moved 31.35 USD net (the balance transaction's net), and nothing else.
  CHECK(world.clearing() == std::map<std::string, long>{{"USD", 3135}});
  CHECK(world.scalar("SELECT sum(amount_minor) FROM bankworker.journal_lines WHERE account_code = 'stripe.fees'") == 125);
  CHECK(world.unbalanced_currencies() == 0);
  CHECK(world.awaiting().empty());
  CHECK(world.awaiting_gauge() == 0);

  // Replaying both events (an operator's re-post, a re-delivery) changes nothing, and the intent's
  // re-post finds its leg settled: no mark comes back.
  const long entries = world.scalar("SELECT count(*) FROM bankworker.journal_entries");
  world.admin_exec("UPDATE bankworker.stripe_events SET state = 'received'");
  CHECK(world.poster->post_round().posted == 2);
  CHECK(world.scalar("SELECT count(*) FROM bankworker.journal_entries") == entries);
  CHECK(world.clearing() == std::map<std::string, long>{{"USD", 3135}});
  CHECK(world.awaiting().empty());
}

TEST_CASE("an event whose balance transaction is already in the ledger is not marked awaiting settlement",
          "[pg][stripe][poster][settlement]") {
  settlement_world world;
  SECTION("the charge's event posted first, in a round of its own") {
    world.store("evt_charge", charge_event("evt_charge"), "charge.succeeded");
    CHECK(world.poster->post_round().posted == 1);
    world.store("evt_intent", intent_event("evt_intent"), "payment_intent.succeeded");
    CHECK(world.poster->post_round().posted == 1);
  }
  SECTION("both in one batch, the intent first") {
    world.store("evt_intent", intent_event("evt_intent"), "payment_intent.succeeded");
    world.store("evt_charge", charge_event("evt_charge"), "charge.succeeded");
    CHECK(world.poster->post_round().posted == 2);
  }
  CHECK(world.awaiting().empty());
  CHECK(world.awaiting_gauge() == 0);
  CHECK(world.clearing() == std::map<std::string, long>{{"USD", 3135}});
}
