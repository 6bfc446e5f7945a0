// The operator console against PostgreSQL: signing in, sessions and their expiry, the CSRF check,
// the login limit, escaping of tenant data, 400/404 on bad input, and the audit row every tenant
// read or change leaves. Requests go through console::handle, the function the admin server's
// routes call, on a real io_context and DB thread pool.
#include <catch2/catch.hpp>

#include "crypto/random.hpp"

#include <pqxx/pqxx>

#include "db/audit.hpp"
#include "ledger/tenants.hpp"
#include "queue/worker_processes.hpp"
#include "tests/console/console_fixture.hpp"

using namespace bankworker;

using test::console_fixture;
using test::header_of;
using test::hidden_value;
using test::operator_password;

TEST_CASE("without a session every console page sends the browser to the login page", "[pg][console]") {
  console_fixture fixture;
  for (const char* path : {"/console/", "/console/jobs", "/console/jobs/1", "/console/audit"}) {
    const auto answer = fixture.call("GET", path);
    CHECK(answer.status == 303);
    CHECK(header_of(answer, "Location") == "/console/login");
  }
  const auto login = fixture.call("GET", "/console/login");
  CHECK(login.status == 200);
  CHECK(header_of(login, "Content-Security-Policy").find("frame-ancestors 'none'") != std::string::npos);
  const std::string cookie = header_of(login, "Set-Cookie", "bw_console_login=");
  CHECK(cookie.find("HttpOnly") != std::string::npos);
  CHECK(cookie.find("SameSite=Strict") != std::string::npos);
}

TEST_CASE("an operator signs in with the right password only, into an HttpOnly SameSite=Strict session", "[pg][console]") {
  console_fixture fixture;
  const auto wrong = fixture.sign_in("alice", "not the password at all");
  CHECK(wrong.status == 401);
  CHECK(header_of(wrong, "Set-Cookie", "bw_console=").empty());
  const auto unknown = fixture.sign_in("mallory", operator_password);
  CHECK(unknown.status == 401);
  CHECK(unknown.body.find("Operator name or password is wrong") != std::string::npos);

  const auto right = fixture.sign_in("alice", operator_password);
  REQUIRE(right.status == 303);
  CHECK(header_of(right, "Location") == "/console/");
  const std::string cookie = header_of(right, "Set-Cookie", "bw_console=");
  CHECK(cookie.find("HttpOnly") != std::string::npos);
  CHECK(cookie.find("SameSite=Strict") != std::string::npos);
  CHECK(cookie.find("Max-Age=28800") != std::string::npos);
  CHECK(cookie.find("Secure") == std::string::npos);  // plain HTTP on loopback
  const auto overview = fixture.call("GET", "/console/", cookie.substr(0, cookie.find(';')));
  CHECK(overview.status == 200);
  CHECK(overview.body.find("Jobs by kind and state") != std::string::npos);
}

TEST_CASE("a login form posted without its own cookie (another site's form) is refused", "[pg][console]") {
  console_fixture fixture;
  const auto form = fixture.call("GET", "/console/login");
  const std::string token = "login_token=" + hidden_value(form.body, "login_token");
  const auto answer = fixture.call("POST", "/console/login", {}, token + "&name=alice&password=a+long+operator+password");
  CHECK(answer.status == 403);
  CHECK(header_of(answer, "Set-Cookie", "bw_console=").empty());
}

TEST_CASE("an expired session is sent back to the login page", "[pg][console]") {
  console_fixture fixture;
  const std::string cookie = fixture.session_cookie();
  CHECK(fixture.call("GET", "/console/jobs", cookie).status == 200);
  {
    const auto admin = fixture.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec0("UPDATE bankworker.operator_sessions SET expires_at = now() - interval '1 second'");
    tx.commit();
  }
  const auto answer = fixture.call("GET", "/console/jobs", cookie);
  CHECK(answer.status == 303);
  CHECK(header_of(answer, "Location") == "/console/login");
}

TEST_CASE("signing out ends the session in the database, not only in the browser", "[pg][console]") {
  console_fixture fixture;
  const std::string cookie = fixture.session_cookie();
  const std::string csrf = hidden_value(fixture.call("GET", "/console/jobs", cookie).body, "csrf");
  CHECK(fixture.call("POST", "/console/logout", cookie, "csrf=" + csrf).status == 303);
  CHECK(fixture.call("GET", "/console/jobs", cookie).status == 303);
}

TEST_CASE("failed sign-ins are limited per account: the right password is refused once the limit is hit", "[pg][console]") {
  console_fixture fixture;
  for (int i = 0; i < 5; ++i) CHECK(fixture.sign_in("alice", "wrong password " + std::to_string(i)).status == 401);
  const auto limited = fixture.sign_in("alice", operator_password, "127.0.0.2");
  CHECK(limited.status == 429);
  CHECK(limited.body.find("Too many failed sign-ins for this account") != std::string::npos);
  CHECK(header_of(limited, "Set-Cookie", "bw_console=").empty());
}

TEST_CASE("failed sign-ins are limited per address across account names", "[pg][console]") {
  console::console_settings settings;
  settings.login.address_failures_max = 3;
  console_fixture fixture(settings);
  for (int i = 0; i < 3; ++i) CHECK(fixture.sign_in("guess" + std::to_string(i), operator_password, "10.1.1.1").status == 401);
  CHECK(fixture.sign_in("alice", operator_password, "10.1.1.1").status == 429);
  CHECK(fixture.sign_in("alice", operator_password, "10.1.1.2").status == 303);
}

TEST_CASE("a tenant named <script> shows as text, the payload's token is masked, and the read is audited", "[pg][console]") {
  console_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "<script>alert(1)</script>");
  const std::int64_t job = fixture.dead_job(tenant);
  const std::string cookie = fixture.session_cookie();
  const auto page = fixture.call("GET", "/console/jobs/" + std::to_string(job), cookie);
  REQUIRE(page.status == 200);
  CHECK(page.body.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(page.body.find("<script") == std::string::npos);
  CHECK(page.body.find("HTTP 500 &lt;b&gt;from provider&lt;/b&gt;") != std::string::npos);
  CHECK(page.body.find("[REDACTED]") != std::string::npos);
  CHECK(page.body.find("00000000-0000-0000-0000-000000000001") == std::string::npos);
  CHECK(fixture.console_audit_rows(tenant) == std::vector<std::string>{"operator:alice console.job.viewed " + std::to_string(job)});
  // The chain with the console's rows in it still verifies.
  CHECK_FALSE(db::verify_audit_chain(*fixture.connections, *fixture.keys, tenant).broken);
}

TEST_CASE("a job's page lists every failed attempt with its worker, its error escaped and masked", "[pg][console]") {
  console_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Attempts Ltd");
  queue::new_job job;
  job.tenant = tenant;
  job.kind = "plaid.sync";
  job.payload_json = "{}";
  const std::int64_t id = fixture.jobs.enqueue(std::vector<queue::new_job>{job}).at(0);
  const core::uuid worker = bankworker::crypto::random_uuid();
  const auto claimed = fixture.jobs.claim(worker, 1);
  REQUIRE(claimed.size() == 1);
  REQUIRE(fixture.jobs
              .complete(worker, std::vector{queue::completion{
                                    claimed[0].ref, 1,
                                    queue::outcome::retry("HTTP 503 <i>busy</i> for access-sandbox-4f0a2b6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c")}})
              .size() == 1);
  const auto page = fixture.call("GET", "/console/jobs/" + std::to_string(id), fixture.session_cookie());
  REQUIRE(page.status == 200);
  const std::size_t attempts = page.body.find("Attempts that failed");
  REQUIRE(attempts != std::string::npos);
  CHECK(page.body.find("HTTP 503 &lt;i&gt;busy&lt;/i&gt;", attempts) != std::string::npos);
  CHECK(page.body.find(worker.to_string(), attempts) != std::string::npos);
  CHECK(page.body.find(">retry<", attempts) != std::string::npos);
  CHECK(page.body.find("4f0a2b6c") == std::string::npos);
}

TEST_CASE("the overview's counts are not a tenant read: no audit row", "[pg][console]") {
  console_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Counts Ltd");
  fixture.dead_job(tenant);
  const std::string cookie = fixture.session_cookie();
  const auto overview = fixture.call("GET", "/console/", cookie);
  REQUIRE(overview.status == 200);
  CHECK(overview.body.find("plaid.sync") != std::string::npos);
  CHECK(fixture.console_audit_rows(tenant).empty());
  // A list across tenants shows no error text; one tenant's list does, and is audited.
  const auto across = fixture.call("GET", "/console/jobs?state=dead", cookie);
  CHECK(across.body.find("from provider") == std::string::npos);
  CHECK(fixture.console_audit_rows(tenant).empty());
  const auto one = fixture.call("GET", "/console/jobs?tenant=" + tenant.to_string(), cookie);
  CHECK(one.body.find("from provider") != std::string::npos);
  CHECK(fixture.console_audit_rows(tenant).size() == 1);
}

TEST_CASE("the overview lists the worker processes, live first, each value escaped, stopped ones as stopped",
          "[pg][console][worker_processes]") {
  console_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Processes Ltd");
  const auto identity = [](std::string host, std::int32_t pid) {
    return queue::worker_process_identity{.id = crypto::random_uuid(), .hostname = std::move(host), .pid = pid,
                                          .version = "1.2.3<b>", .heartbeat_interval = std::chrono::seconds(15)};
  };
  queue::worker_process_record hostile(*fixture.connections, identity("<script>alert(1)</script>", 4101));
  queue::worker_process_record gone(*fixture.connections, identity("gone-host", 4102));
  hostile.beat();
  gone.beat();
  gone.stop();
  const auto overview = fixture.call("GET", "/console/", fixture.session_cookie());
  REQUIRE(overview.status == 200);
  const std::size_t section = overview.body.find("Worker processes");
  REQUIRE(section != std::string::npos);
  const std::size_t hostile_at = overview.body.find("&lt;script&gt;alert(1)&lt;/script&gt;", section);
  const std::size_t gone_at = overview.body.find("gone-host", section);
  REQUIRE(hostile_at != std::string::npos);
  REQUIRE(gone_at != std::string::npos);
  CHECK(hostile_at < gone_at);  // alive before stopped
  CHECK(overview.body.find("<script") == std::string::npos);
  CHECK(overview.body.find("1.2.3&lt;b&gt;", section) != std::string::npos);
  CHECK(overview.body.find("4101", section) != std::string::npos);
  CHECK(overview.body.find(hostile.identity().id.to_string(), section) != std::string::npos);
  CHECK(overview.body.find(">alive<", hostile_at) < gone_at);
  CHECK(overview.body.find(">stopped at ", gone_at) != std::string::npos);
  CHECK(overview.body.find(" s ago</td>", section) != std::string::npos);
  // Not a tenant read: no audit row anywhere.
  CHECK(fixture.console_audit_rows(tenant).empty());
}

TEST_CASE("retry needs the session's CSRF token: missing or stale is 403 and changes nothing", "[pg][console]") {
  console_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Retry Ltd");
  const std::int64_t job = fixture.dead_job(tenant);
  const std::string path = "/console/jobs/" + std::to_string(job);
  const std::string old_cookie = fixture.session_cookie();
  const std::string stale = hidden_value(fixture.call("GET", path, old_cookie).body, "csrf");
  REQUIRE(stale.size() == 64);
  const std::string cookie = fixture.session_cookie();

  CHECK(fixture.call("POST", path + "/retry", cookie, "").status == 403);
  CHECK(fixture.call("POST", path + "/retry", cookie, "csrf=" + stale).status == 403);
  CHECK(fixture.call("GET", path + "/retry", cookie).status == 404);  // a GET changes nothing
  CHECK(fixture.job_state(job) == "failed");

  const std::string csrf = hidden_value(fixture.call("GET", path, cookie).body, "csrf");
  const auto retried = fixture.call("POST", path + "/retry", cookie, "csrf=" + csrf);
  CHECK(retried.status == 303);
  CHECK(header_of(retried, "Location") == path);
  CHECK(fixture.job_state(job) == "available");
  const auto rows = fixture.console_audit_rows(tenant);
  REQUIRE(!rows.empty());
  CHECK(rows.back() == "operator:alice console.job.retried " + std::to_string(job));
  // Retrying it again says why not.
  const auto again = fixture.call("POST", path + "/retry", cookie, "csrf=" + csrf);
  CHECK(again.status == 409);
  CHECK(again.body.find("is available") != std::string::npos);
}

TEST_CASE("bad input: malformed filters are 400 with the reason, unknown ids and tenants 404", "[pg][console]") {
  console_fixture fixture;
  const std::string cookie = fixture.session_cookie();
  const auto state = fixture.call("GET", "/console/jobs?state=sleeping", cookie);
  CHECK(state.status == 400);
  CHECK(state.body.find("state must be available") != std::string::npos);
  const auto tenant = fixture.call("GET", "/console/jobs?tenant=%3Cscript%3E", cookie);
  CHECK(tenant.status == 400);
  CHECK(tenant.body.find("tenant must be a uuid, not &#39;&lt;script&gt;&#39;") != std::string::npos);
  CHECK(fixture.call("GET", "/console/jobs?kind=BAD%20KIND", cookie).status == 400);
  CHECK(fixture.call("GET", "/console/jobs?state=%zz", cookie).status == 400);
  CHECK(fixture.call("GET", "/console/jobs/999999", cookie).status == 404);
  CHECK(fixture.call("GET", "/console/jobs/abc", cookie).status == 404);
  CHECK(fixture.call("GET", "/console/nowhere", cookie).status == 404);
  CHECK(fixture.call("GET", "/console/audit?tenant=00000000-0000-4000-8000-000000000000", cookie).status == 404);
}

TEST_CASE("retry all matching: the confirmation says how many, the POST revives them and audits each tenant", "[pg][console]") {
  console_fixture fixture;
  const core::uuid a = ledger::create_tenant(*fixture.connections, *fixture.keys, "A Ltd");
  const core::uuid b = ledger::create_tenant(*fixture.connections, *fixture.keys, "B Ltd");
  const std::int64_t a1 = fixture.dead_job(a);
  const std::int64_t a2 = fixture.dead_job(a);
  const std::int64_t b1 = fixture.dead_job(b);
  const std::string cookie = fixture.session_cookie();
  const auto confirm = fixture.call("GET", "/console/jobs/confirm?state=dead&kind=plaid.sync&action=retry", cookie);
  REQUIRE(confirm.status == 200);
  CHECK(confirm.body.find("This will retry <strong>3</strong> job(s)") != std::string::npos);
  CHECK(fixture.job_state(a1) == "failed");  // the confirmation changed nothing
  const std::string csrf = hidden_value(confirm.body, "csrf");
  const auto done = fixture.call("POST", "/console/jobs/bulk", cookie,
                                 "csrf=" + csrf + "&state=failed&kind=plaid.sync&tenant=&action=retry");
  CHECK(done.status == 303);
  CHECK(header_of(done, "Location").find("changed=3") != std::string::npos);
  for (const std::int64_t id : {a1, a2, b1}) CHECK(fixture.job_state(id) == "available");
  CHECK(fixture.console_audit_rows(a) == std::vector<std::string>{"operator:alice console.jobs.retried ?state=failed&kind=plaid.sync"});
  CHECK(fixture.console_audit_rows(b).size() == 1);
}

TEST_CASE("the audit page verifies a tenant's chain on demand and names the first broken row", "[pg][console]") {
  console_fixture fixture;
  const core::uuid tenant = ledger::create_tenant(*fixture.connections, *fixture.keys, "Chain Ltd");
  const std::string cookie = fixture.session_cookie();
  const auto honest = fixture.call("GET", "/console/audit?tenant=" + tenant.to_string(), cookie);
  REQUIRE(honest.status == 200);
  CHECK(honest.body.find("1 rows verified") != std::string::npos);
  {
    const auto admin = fixture.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec("SET LOCAL session_replication_role = replica");
    tx.exec_params0("UPDATE bankworker.audit_log SET subject = 'forged' WHERE tenant_id = $1 AND seq = 2",
                    tenant.to_string());
    tx.commit();
  }
  const auto broken = fixture.call("GET", "/console/audit?tenant=" + tenant.to_string(), cookie);
  REQUIRE(broken.status == 200);
  CHECK(broken.body.find("BROKEN at row 2") != std::string::npos);
}
