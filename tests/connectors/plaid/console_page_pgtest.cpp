// Plaid's connections page in the operator console (connectors/plaid/console_page.cpp), wrapped by
// the real console: a tenant's connections by status with their last error masked, a sync
// requested with the session's CSRF token, and the audit rows both leave.
#include <catch2/catch.hpp>

#include "connectors/plaid/console_page.hpp"
#include "ledger/tenants.hpp"
#include "tests/console/console_fixture.hpp"

using namespace bankworker;
using test::hidden_value;

namespace {

constexpr const char* connection = "cccccccc-0000-4000-8000-00000000000c";

struct plaid_page_fixture : test::console_fixture {
  plaid_page_fixture() : test::console_fixture({}, [](db::pool& pool) {
        return std::vector<service::admin_page>{plaid::connections_console_page(pool)};
      }) {}
};

}  // namespace

TEST_CASE("the connections page shows a tenant's connections with masked errors and requests a sync, audited",
          "[pg][console][plaid]") {
  plaid_page_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Bank <b>Co</b>");
  {
    const auto admin = fixture.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params0("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status, last_error)"
                    " VALUES ($1, $2, 'sandbox', 'needs_reauth', 'ITEM_LOGIN_REQUIRED for access-sandbox-"
                    "00000000-0000-0000-0000-000000000009')",
                    tenant.to_string(), connection);
    tx.commit();
  }
  const std::string cookie = fixture.session_cookie();
  const std::string page_path = "/console/p/plaid/connections?tenant=" + tenant.to_string();
  const auto page = fixture.call("GET", page_path, cookie);
  REQUIRE(page.status == 200);
  CHECK(page.body.find("Bank &lt;b&gt;Co&lt;/b&gt;") != std::string::npos);
  CHECK(page.body.find("needs_reauth") != std::string::npos);
  CHECK(page.body.find("ITEM_LOGIN_REQUIRED") != std::string::npos);
  CHECK(page.body.find("00000000-0000-0000-0000-000000000009") == std::string::npos);
  CHECK(fixture.call("GET", page_path + "&status=active", cookie).body.find(connection) == std::string::npos);
  CHECK(fixture.call("GET", page_path + "&status=asleep", cookie).status == 400);
  CHECK(fixture.call("GET", "/console/p/plaid/connections?tenant=00000000-0000-4000-8000-000000000000", cookie).status == 404);

  const std::string form = "tenant=" + tenant.to_string() + "&connection=" + connection;
  CHECK(fixture.call("POST", "/console/p/plaid/connections", cookie, form).status == 403);  // no CSRF token
  CHECK(fixture.jobs.list({.state = std::nullopt, .kind = "plaid.sync", .tenant = tenant, .limit = 10}).empty());
  const auto requested = fixture.call("POST", "/console/p/plaid/connections", cookie,
                                      form + "&csrf=" + hidden_value(page.body, "csrf"));
  CHECK(requested.status == 303);
  CHECK(fixture.jobs.list({.state = std::nullopt, .kind = "plaid.sync", .tenant = tenant, .limit = 10}).size() == 1);
  CHECK(fixture.console_audit_rows(tenant) ==
        std::vector<std::string>{"operator:alice console.plaid.connections.viewed ",
                                 "operator:alice console.plaid.connections.viewed ",
                                 "operator:alice console.plaid.sync_requested " + std::string(connection)});
  const auto overview = fixture.call("GET", "/console/", cookie);
  CHECK(overview.body.find("Bank connections (Plaid)") != std::string::npos);
}
