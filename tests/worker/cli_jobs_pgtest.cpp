// `bankworker jobs list|retry|cancel` as an operator runs them, against a real database.
#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"

using bankworker::test::lines_of;
using bankworker::test::run_bankworker;
using bankworker::test::scratch_database;

namespace {

constexpr const char* tenant_a = "aaaaaaaa-0000-4000-8000-000000000001";
constexpr const char* tenant_b = "bbbbbbbb-0000-4000-8000-000000000002";

// Three jobs: A's dead sync (its last error carries a token), A's waiting link, B's waiting sync.
void insert_jobs(const scratch_database& database) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 'a'), ($2, 'b')", tenant_a, tenant_b);
  tx.exec_params(
      "INSERT INTO bankworker.jobs (job_id, tenant_id, kind, state, attempt, attempts_max, finished_at, failure, last_error)"
      " VALUES (1, $1, 'plaid.sync', 'failed', 3, 3, now(), 'attempts_exhausted', 'HTTP 500\nfrom provider')",
      tenant_a);
  tx.exec_params("INSERT INTO bankworker.jobs (job_id, tenant_id, kind) VALUES (2, $1, 'plaid.link')", tenant_a);
  tx.exec_params("INSERT INTO bankworker.jobs (job_id, tenant_id, kind) VALUES (3, $1, 'plaid.sync')", tenant_b);
  tx.commit();
}

}  // namespace

TEST_CASE("jobs list filters by state, kind and tenant, newest first, in text and JSON", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};

  const auto all = run_bankworker({"jobs", "list"}, env);
  REQUIRE(all.exit_code == 0);
  const auto rows = lines_of(all.out);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].rfind("3 " + std::string(tenant_b) + " plaid.sync available attempt 0/25", 0) == 0);
  CHECK(rows[2].find("failure attempts_exhausted error: HTTP 500 from provider") != std::string::npos);

  const auto syncs_of_a = run_bankworker({"jobs", "list", "--kind", "plaid.sync", "--tenant", tenant_a}, env);
  REQUIRE(syncs_of_a.exit_code == 0);
  REQUIRE(lines_of(syncs_of_a.out).size() == 1);
  CHECK(syncs_of_a.out.rfind("1 ", 0) == 0);

  const auto dead = run_bankworker({"--json", "jobs", "list", "--state", "failed"}, env);
  REQUIRE(dead.exit_code == 0);
  CHECK(dead.out.rfind("{\"jobs\":[{\"job_id\":1,\"tenant_id\":\"" + std::string(tenant_a) +
                          "\",\"kind\":\"plaid.sync\",\"state\":\"failed\",\"priority\":100,\"attempt\":3,"
                          "\"attempts_max\":3,",
                      0) == 0);
  CHECK(dead.out.find("\"failure\":\"attempts_exhausted\",\"last_error\":\"HTTP 500\\nfrom provider\"}]}\n") !=
        std::string::npos);

  const auto bad = run_bankworker({"jobs", "list", "--state", "sleeping"}, env);
  CHECK(bad.exit_code == 2);
}

TEST_CASE("jobs retry revives a dead job and jobs cancel cancels a waiting one", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};

  const auto revived = run_bankworker({"jobs", "retry", "1"}, env);
  REQUIRE(revived.exit_code == 0);
  CHECK(revived.out == "job 1 available\n");
  const auto cancelled = run_bankworker({"--json", "jobs", "cancel", "2"}, env);
  REQUIRE(cancelled.exit_code == 0);
  CHECK(cancelled.out == "{\"job_id\":2,\"state\":\"cancelled\"}\n");

  const auto admin = database.connect_as_admin();
  {
    pqxx::work tx(*admin);
    const auto row = tx.exec1("SELECT state, attempt, failure IS NULL FROM bankworker.jobs WHERE job_id = 1");
    CHECK(row[0].as<std::string>() == "available");
    CHECK(row[1].as<int>() == 0);
    CHECK(row[2].as<bool>());
    CHECK(tx.exec1("SELECT state FROM bankworker.jobs WHERE job_id = 2")[0].as<std::string>() == "cancelled");
  }

  // Cancelling twice, retrying a waiting job, or naming no job at all fail with one line.
  const auto again = run_bankworker({"jobs", "cancel", "2"}, env);
  CHECK(again.exit_code == 1);
  CHECK(lines_of(again.err).size() == 1);
  CHECK(run_bankworker({"jobs", "retry", "3"}, env).exit_code == 1);
  const auto missing = run_bankworker({"jobs", "retry", "99"}, env);
  CHECK(missing.exit_code == 1);
  CHECK(missing.err == "bankworker: no job 99\n");
  CHECK(run_bankworker({"jobs", "retry", "one"}, env).exit_code == 2);
}

TEST_CASE("jobs list takes the metrics' state names: dead is failed, retried is retryable", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto dead = run_bankworker({"jobs", "list", "--state", "dead"}, env);
  REQUIRE(dead.exit_code == 0);
  REQUIRE(lines_of(dead.out).size() == 1);
  CHECK(dead.out.rfind("1 " + std::string(tenant_a) + " plaid.sync failed", 0) == 0);
  CHECK(run_bankworker({"jobs", "list", "--state", "retried"}, env).out.empty());
}

TEST_CASE("jobs show prints one job with every field and its payload masked", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params(
        "UPDATE bankworker.jobs SET payload = $1::jsonb WHERE job_id = 2",
        std::string(R"({"public_token":"public-sandbox-0d3f1c2a-5b6e-4f70-8a9b-0c1d2e3f4a5b","secret":"hunter2-hunter2"})"));
    tx.commit();
  }
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};

  const auto shown = run_bankworker({"jobs", "show", "2"}, env);
  REQUIRE(shown.exit_code == 0);
  CHECK(shown.out.rfind("job 2\ntenant " + std::string(tenant_a) + "\nkind plaid.link\nstate available\n", 0) == 0);
  CHECK(shown.out.find("\npayload {") != std::string::npos);
  CHECK(shown.out.find("0d3f1c2a-5b6e") == std::string::npos);
  CHECK(shown.out.find("hunter2") == std::string::npos);

  const auto dead = run_bankworker({"--json", "jobs", "show", "1"}, env);
  REQUIRE(dead.exit_code == 0);
  CHECK(dead.out.rfind("{\"job_id\":1,", 0) == 0);
  CHECK(dead.out.find("\"failure\":\"attempts_exhausted\",\"last_error\":\"HTTP 500\\nfrom provider\"") !=
        std::string::npos);
  CHECK(dead.out.find("\"in_doubt\":false") != std::string::npos);

  const auto missing = run_bankworker({"jobs", "show", "99"}, env);
  CHECK(missing.exit_code == 1);
  CHECK(missing.err == "bankworker: no job 99\n");
}

TEST_CASE("jobs show lists every failed attempt, newest first, with its time, worker and error", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  constexpr const char* worker_a = "0a0a0a0a-0000-4000-8000-00000000000a";
  constexpr const char* worker_b = "0b0b0b0b-0000-4000-8000-00000000000b";
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params("INSERT INTO bankworker.job_attempts (tenant_id, job_id, attempt, outcome, error, worker, started_at,"
                   " finished_at) VALUES"
                   " ($1, 1, 1, 'retry', 'HTTP 503\nfrom provider', $2, '2026-01-02 03:04:00+00', '2026-01-02 03:04:05+00'),"
                   " ($1, 1, 2, 'lease_expired', 'lease expired', $3, '2026-01-02 03:05:00+00', '2026-01-02 03:06:00+00'),"
                   " ($1, 1, 3, 'retry', 'HTTP 500\nfrom provider', $2, '2026-01-02 03:07:00+00', '2026-01-02 03:07:01+00')",
                   tenant_a, worker_a, worker_b);
    tx.commit();
  }
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};

  const auto shown = run_bankworker({"jobs", "show", "1"}, env);
  REQUIRE(shown.exit_code == 0);
  CHECK(shown.out.find("\nfailed_attempts 3\n"
                       "  attempt 3 retry at 2026-01-02 03:07:01+00 worker " + std::string(worker_a) +
                       ": HTTP 500 from provider\n"
                       "  attempt 2 lease_expired at 2026-01-02 03:06:00+00 worker " + std::string(worker_b) +
                       ": lease expired\n"
                       "  attempt 1 retry at 2026-01-02 03:04:05+00 worker " + std::string(worker_a) +
                       ": HTTP 503 from provider\n") != std::string::npos);
  // A job that never failed says so.
  CHECK(run_bankworker({"jobs", "show", "2"}, env).out.find("\nfailed_attempts 0\n") != std::string::npos);

  const auto json = run_bankworker({"--json", "jobs", "show", "1"}, env);
  REQUIRE(json.exit_code == 0);
  CHECK(json.out.find(",\"attempts\":[{\"attempt\":3,\"outcome\":\"retry\",\"error\":\"HTTP 500\\nfrom provider\","
                      "\"worker\":\"" + std::string(worker_a) +
                      "\",\"started_at\":\"2026-01-02 03:07:00+00\",\"finished_at\":\"2026-01-02 03:07:01+00\"},"
                      "{\"attempt\":2,") != std::string::npos);
  CHECK(json.out.find("{\"attempt\":1,\"outcome\":\"retry\",\"error\":\"HTTP 503\\nfrom provider\"") !=
        std::string::npos);
}

TEST_CASE("bulk jobs retry and cancel change every match, and --dry-run changes nothing", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto admin = database.connect_as_admin();
  const auto state_of = [&](int id) {
    pqxx::work tx(*admin);
    return tx.exec_params1("SELECT state FROM bankworker.jobs WHERE job_id = $1", id)[0].as<std::string>();
  };

  // Without a filter a bulk change is refused: a bare `jobs cancel` must not cancel everything.
  CHECK(run_bankworker({"jobs", "cancel"}, env).exit_code == 2);

  const auto preview = run_bankworker({"jobs", "cancel", "--kind", "plaid.sync", "--dry-run"}, env);
  REQUIRE(preview.exit_code == 0);
  CHECK(lines_of(preview.out) ==
        std::vector<std::string>{"3 " + std::string(tenant_b) + " plaid.sync available would cancel",
                                 "1 matched, 0 cancelled (dry run)"});
  CHECK(state_of(3) == "available");

  const auto cancelled = run_bankworker({"--json", "jobs", "cancel", "--state", "available", "--tenant", tenant_a}, env);
  REQUIRE(cancelled.exit_code == 0);
  CHECK(cancelled.out == "{\"dry_run\":false,\"jobs\":[{\"job_id\":2,\"tenant_id\":\"" + std::string(tenant_a) +
                             "\",\"kind\":\"plaid.link\",\"state\":\"available\",\"changed\":true}],\"changed\":1}\n");
  CHECK(state_of(2) == "cancelled");
  CHECK(state_of(3) == "available");

  // Retry takes the dead job and the cancelled one; the waiting job 3 is not a candidate.
  const auto revived = run_bankworker({"jobs", "retry", "--tenant", tenant_a}, env);
  REQUIRE(revived.exit_code == 0);
  CHECK(lines_of(revived.out).back() == "2 matched, 2 retried");
  CHECK(state_of(1) == "available");
  CHECK(state_of(2) == "available");
}

TEST_CASE("bulk retry skips a dead job whose unique key already waits, and says so", "[pg][cli][queue]") {
  const scratch_database database;
  insert_jobs(database);
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec("UPDATE bankworker.jobs SET unique_key = 'plaid.sync:x' WHERE job_id = 1");
    tx.exec_params("INSERT INTO bankworker.jobs (job_id, tenant_id, kind, unique_key) VALUES (4, $1, 'plaid.sync',"
                   " 'plaid.sync:x')",
                   tenant_a);
    tx.commit();
  }
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  const auto revived = run_bankworker({"jobs", "retry", "--state", "dead"}, env);
  REQUIRE(revived.exit_code == 0);
  CHECK(lines_of(revived.out) ==
        std::vector<std::string>{"1 " + std::string(tenant_a) +
                                     " plaid.sync failed skipped (a job with its unique key waits): retry",
                                 "1 matched, 0 retried"});
}

TEST_CASE("the option --database-url takes the place of BANKWORKER_DATABASE_URL for a database command", "[pg][cli]") {
  const scratch_database database;
  insert_jobs(database);
  const auto listed = run_bankworker({"jobs", "list", "--database-url", database.runtime_url()}, {});
  REQUIRE(listed.exit_code == 0);
  CHECK(lines_of(listed.out).size() == 3);
  // The runtime login's refusal of owner power holds for the option too.
  CHECK(run_bankworker({"jobs", "list", "--database-url", database.url()}, {}).exit_code == 78);
}
