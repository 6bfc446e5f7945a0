// Stripe's webhook inbox page in the operator console (connectors/stripe/console_page.cpp), wrapped
// by the real console: a tenant's events, failed and unposted first, never a body; a failed event
// posted again (back to received with its attempts cleared, where the posters take it: no job row,
// issue #21) with the session's CSRF token; audited.
#include <catch2/catch.hpp>

#include "connectors/stripe/console_page.hpp"
#include "ledger/tenants.hpp"
#include "tests/console/console_fixture.hpp"

using namespace bankworker;
using test::hidden_value;

namespace {

struct stripe_page_fixture : test::console_fixture {
  stripe_page_fixture() : test::console_fixture({}, [](db::pool& pool) {
        return std::vector<service::admin_page>{stripe::inbox_console_page(pool)};
      }) {}
};

}  // namespace

TEST_CASE("the inbox page lists a tenant's events without bodies and posts a failed one again, audited",
          "[pg][console][stripe]") {
  stripe_page_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Shop");
  {
    const auto admin = fixture.database.connect_as_admin();
    pqxx::work tx(*admin);
    for (const auto& [id, state] : {std::pair{"evt_posted", "posted"}, std::pair{"evt_failed", "failed"}}) {
      tx.exec_params0("INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, livemode, created_at, body, state,"
                      " attempts) VALUES ($1, $2, 'charge.succeeded', false, now(), '{\"secret\":\"sk_test_visible\"}', $3, 8)",
                      tenant.to_string(), id, state);
    }
    tx.commit();
  }
  const std::string cookie = fixture.session_cookie();
  const std::string page_path = "/console/p/stripe/inbox?tenant=" + tenant.to_string();
  const auto page = fixture.call("GET", page_path, cookie);
  REQUIRE(page.status == 200);
  CHECK(page.body.find("evt_failed") < page.body.find("evt_posted"));
  CHECK(page.body.find("sk_test") == std::string::npos);
  CHECK(fixture.call("GET", page_path + "&state=failed", cookie).body.find("evt_posted") == std::string::npos);
  CHECK(fixture.call("GET", page_path + "&state=lost", cookie).status == 400);

  const std::string form = "tenant=" + tenant.to_string() + "&csrf=" + hidden_value(page.body, "csrf");
  CHECK(fixture.call("POST", "/console/p/stripe/inbox", cookie, form + "&event=evt_posted").status == 404);
  CHECK(fixture.call("POST", "/console/p/stripe/inbox", cookie, form + "&event=evt_failed").status == 303);
  const auto admin = fixture.database.connect_as_admin();
  pqxx::work tx(*admin);
  CHECK(tx.exec1("SELECT state FROM bankworker.stripe_events WHERE event_id = 'evt_failed'")[0].as<std::string>() ==
        "received");
  CHECK(tx.exec1("SELECT attempts FROM bankworker.stripe_events WHERE event_id = 'evt_failed'")[0].as<int>() == 0);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.jobs")[0].as<int>() == 0);
  const auto rows = fixture.console_audit_rows(tenant);
  REQUIRE(rows.size() == 3);
  CHECK(rows.back() == "operator:alice console.stripe.event.reposted evt_failed");
}
