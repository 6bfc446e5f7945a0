// The operator console in a real browser (issue #22): a real `bankworker run` on a scratch
// database, an operator made with `bankworker operator add`, and headless Chromium driven by
// playwright-core (tests/browser/console_test.mjs) through the console's pages (the overview
// listing the worker's own process alive). Afterwards the
// database must hold what the browser did: the job revived, and the audit rows of the tenant's
// pages the operator opened. Screenshots of each page are left in the build folder
// (tests/console-screenshots) for a reviewer.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <filesystem>

#include <pqxx/pqxx>

#include "ledger/tenants.hpp"
#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

constexpr const char* tenant_name = "<script>window.__bankworker_pwned = true</script>";

// The operator's one-time password from `operator add`'s output.
std::string added_password(const std::string& out) {
  const std::string marker = "password (shown once): ";
  const std::size_t at = out.find(marker);
  REQUIRE(at != std::string::npos);
  return out.substr(at + marker.size(), 32);
}

}  // namespace

TEST_CASE("in Chromium: sign in, open a dead job, retry it and see it available, the CSP blocks an injected "
          "script, and the tenant's pages leave audit rows", "[pg][browser][console]") {
  REQUIRE(std::filesystem::exists(BANKWORKER_CHROMIUM));
  REQUIRE(std::filesystem::exists(std::filesystem::path(BANKWORKER_BROWSER_DIR) / "node_modules" / "playwright-core"));
  const test::scratch_database database;
  const test::root_key_file key;
  const auto pool = database.worker_pool(std::size_t{2});
  const auto keys = test::test_key_store();
  const core::uuid tenant = ledger::create_tenant(*pool, *keys, tenant_name);
  queue::job_queue jobs(*pool, {});
  queue::new_job job;
  job.tenant = tenant;
  job.kind = "plaid.sync";
  const auto ids = jobs.enqueue(std::vector<queue::new_job>{job});
  REQUIRE(ids.size() == 1);
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params0("UPDATE bankworker.jobs SET state = 'failed', attempt = attempts_max, finished_at = now(),"
                    " failure = 'attempts_exhausted', last_error = 'HTTP 500 from provider' WHERE job_id = $1", ids[0]);
    tx.commit();
  }
  const std::map<std::string, std::string> cli_env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto added = test::run_bankworker({"operator", "add", "alice"}, cli_env);
  REQUIRE(added.exit_code == 0);

  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string console_url = "http://127.0.0.1:" + std::to_string(admin_port);
  // No Plaid or Stripe settings: the job is not run by this worker, so it stays where the
  // console puts it. Without a BANKWORKER_PLAID_* configuration a plaid.sync is never claimed.
  test::child_process worker(BANKWORKER_BINARY, {"run"},
                             {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(test::free_loopback_port())},
                              {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                              {"BANKWORKER_LOG_LEVEL", "warn"}});
  REQUIRE(test::eventually([&] { return test::http_get(console_url + "/healthz").status == 200; }));

  const std::filesystem::path output = std::filesystem::path(BANKWORKER_BROWSER_OUTPUT_DIR);
  std::filesystem::remove_all(output);
  const auto browser = test::run_process(
      "/usr/bin/env",
      {"node", std::string(BANKWORKER_BROWSER_DIR) + "/console_test.mjs"},
      {{"PATH", "/usr/local/bin:/usr/bin:/bin"},
       {"HOME", std::filesystem::temp_directory_path().string()},
       {"CONSOLE_URL", console_url},
       {"OPERATOR", "alice"},
       {"PASSWORD", added_password(added.out)},
       {"JOB_ID", std::to_string(ids[0])},
       {"TENANT_ID", tenant.to_string()},
       {"TENANT_NAME", tenant_name},
       {"WORKER_PID", std::to_string(worker.pid())},
       {"OUTPUT_DIR", output.string()},
       {"CHROMIUM", BANKWORKER_CHROMIUM}},
      180'000);
  INFO(browser.out << browser.err);
  CHECK(browser.exit_code == 0);
  CHECK(browser.out.find("browser test passed") != std::string::npos);
  for (const char* shot : {"01-login", "02-overview", "03-jobs-dead", "04-job-dead", "05-job-retried", "06-audit"}) {
    CHECK(std::filesystem::exists(output / (std::string(shot) + ".png")));
  }

  // What the browser did is in the database: the job revived, the tenant's reads and the retry audited.
  CHECK(jobs.details(ids[0])->summary.state == queue::job_state::available);
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  std::vector<std::string> rows;
  for (const auto& row : tx.exec_params("SELECT actor || ' ' || action FROM bankworker.audit_log WHERE tenant_id = $1"
                                        " AND actor LIKE 'operator:%' ORDER BY seq", tenant.to_string())) {
    rows.push_back(row[0].as<std::string>());
  }
  const auto has = [&](std::string_view row) { return std::find(rows.begin(), rows.end(), row) != rows.end(); };
  CHECK(has("operator:alice console.job.viewed"));
  CHECK(has("operator:alice console.job.retried"));
  CHECK(has("operator:alice console.audit.verified"));
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(60)) == 0);
}
