// The job queue against the private PostgreSQL: enqueue, fair claims, leases, outcomes, the unique
// sync rule, the app's request functions, and worker processes that run concurrently or die.
#include <catch2/catch.hpp>
#include <signal.h>

#include <atomic>
#include <barrier>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include <pqxx/pqxx>

#include "crypto/random.hpp"
#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "tests/support/scope_token.hpp"
#include "tests/support/scratch_database.hpp"

using namespace std::chrono_literals;
using bankworker::core::uuid;
using bankworker::test::child_process;
using bankworker::test::scratch_database;
namespace queue = bankworker::queue;
namespace db = bankworker::db;

namespace {

const uuid tenant_a = *uuid::parse("aaaaaaaa-0000-4000-8000-000000000001");
const uuid tenant_b = *uuid::parse("bbbbbbbb-0000-4000-8000-000000000002");
const uuid connection_a = *uuid::parse("aaaaaaaa-0000-4000-8000-0000000000c1");
const uuid connection_b = *uuid::parse("bbbbbbbb-0000-4000-8000-0000000000c2");

// Tenants A and B, each with one active connection, inserted as the cluster admin.
void insert_tenants(const scratch_database& database) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  for (const auto& [tenant, connection] : {std::pair{tenant_a, connection_a}, std::pair{tenant_b, connection_b}}) {
    tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 'tenant')", tenant.to_string());
    tx.exec_params("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
                   " VALUES ($1, $2, 'sandbox', 'active')",
                   tenant.to_string(), connection.to_string());
  }
  tx.commit();
}

std::unique_ptr<db::pool> queue_pool(const scratch_database& database, std::size_t connections = 2) {
  db::pool_settings settings;
  settings.connections = connections;
  return database.worker_pool(std::move(settings));
}

std::vector<queue::new_job> noop_jobs(const uuid& tenant, std::size_t count) {
  std::vector<queue::new_job> jobs(count);
  for (auto& job : jobs) {
    job.tenant = tenant;
    job.kind = "test.noop";
  }
  return jobs;
}

long scalar(const scratch_database& database, const std::string& sql) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  return tx.exec1(sql)[0].as<long>();
}

std::string job_state(const scratch_database& database, std::int64_t id) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  return tx.exec_params1("SELECT state FROM bankworker.jobs WHERE job_id = $1", id)[0].as<std::string>();
}

void create_effects_table(const scratch_database& database) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  tx.exec("CREATE TABLE public.effects (job_id bigint NOT NULL, pid integer NOT NULL,"
          " at timestamptz NOT NULL DEFAULT clock_timestamp())");
  tx.exec("GRANT SELECT, INSERT ON public.effects TO bankworker_worker");
  tx.commit();
}

}  // namespace

TEST_CASE("bulk enqueue stores every job and a claim leases them to its owner", "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});

  const std::vector<std::int64_t> ids = jobs.enqueue(noop_jobs(tenant_a, 12'345));
  CHECK(ids.size() == 12'345);
  CHECK(std::set(ids.begin(), ids.end()).size() == ids.size());

  const uuid owner = bankworker::crypto::random_uuid();
  const auto claimed = jobs.claim(owner, 100);
  REQUIRE(claimed.size() == 100);
  CHECK(claimed.front().attempt == 1);
  CHECK(claimed.front().kind == "test.noop");
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'running' AND lease_owner = '" +
                             owner.to_string() + "' AND lease_expires_at > now() + interval '50 seconds'") == 100);

  std::vector<queue::completion> outcomes;
  for (const auto& job : claimed) outcomes.push_back({job.ref, job.attempt, queue::outcome::done()});
  const auto completed = jobs.complete(owner, outcomes);
  CHECK(completed.size() == 100);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded'") == 100);

  // A completion by anyone but the lease holder changes nothing.
  const auto more = jobs.claim(owner, 1);
  REQUIRE(more.size() == 1);
  const std::vector<queue::completion> stolen{{more[0].ref, 1, queue::outcome::done()}};
  CHECK(jobs.complete(bankworker::crypto::random_uuid(), stolen).empty());
  CHECK(job_state(database, more[0].ref.id) == "running");
}

TEST_CASE("a job is refused before it reaches the database when it breaks a limit", "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  auto bad = noop_jobs(tenant_a, 1);
  bad[0].kind = "Not A Kind";
  CHECK_THROWS_AS(jobs.enqueue(bad), queue::job_rejected);
  bad = noop_jobs(tenant_a, 1);
  bad[0].payload_json = "{\"x\":\"" + std::string(bankworker::limits::job_payload_bytes_max, 'x') + "\"}";
  CHECK_THROWS_AS(jobs.enqueue(bad), queue::job_rejected);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs") == 0);
}

TEST_CASE("a tenant's job queued after another tenant's 10,000 starts in the first claim round", "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  jobs.enqueue(noop_jobs(tenant_a, 10'000));
  const std::int64_t b_job = jobs.enqueue(noop_jobs(tenant_b, 1)).at(0);

  const auto claimed = jobs.claim(bankworker::crypto::random_uuid(), 10);
  REQUIRE_FALSE(claimed.empty());
  const bool b_claimed = std::any_of(claimed.begin(), claimed.end(), [&](const queue::job& job) {
    return job.ref.id == b_job;
  });
  CHECK(b_claimed);
  // A's share is still taken in the same round: fairness does not starve the big tenant.
  CHECK(std::count_if(claimed.begin(), claimed.end(), [](const queue::job& job) { return job.ref.tenant == tenant_a; }) >= 5);
}

TEST_CASE("a higher-priority job is claimed before older lower-priority jobs of the same tenant", "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  jobs.enqueue(noop_jobs(tenant_a, 50));
  auto urgent = noop_jobs(tenant_a, 1);
  urgent[0].kind = "plaid.revoke";
  urgent[0].priority = queue::priority::revoke;
  jobs.enqueue(urgent);
  const auto claimed = jobs.claim(bankworker::crypto::random_uuid(), 1);
  REQUIRE(claimed.size() == 1);
  CHECK(claimed[0].kind == "plaid.revoke");
}

TEST_CASE("retries follow the seeded backoff on the injected clock, the job dies after attempts_max, and retry revives it",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  // The injected clock starts a minute ahead of the database so the new job is already due.
  std::atomic<std::int64_t> now_us{std::chrono::duration_cast<std::chrono::microseconds>(
                                       (std::chrono::system_clock::now() + 60s).time_since_epoch())
                                       .count()};
  const auto clock = [&] { return queue::time_point(std::chrono::microseconds(now_us.load())); };
  const std::uint64_t seed = Catch::rngSeed() + 7;
  INFO("seed " << seed);
  const queue::backoff_settings backoff{.base = 2'000ms, .cap = 30'000ms};
  queue::job_queue jobs(*connections, {.lease = 10'000ms, .backoff = backoff, .clock = clock, .seed = seed});
  std::mt19937_64 expected_random(seed);

  auto job = noop_jobs(tenant_a, 1);
  job[0].attempts_max = 3;
  const std::int64_t id = jobs.enqueue(job).at(0);
  const uuid owner = bankworker::crypto::random_uuid();
  const std::string token = "access-sandbox-4f0a2b6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c";

  for (std::uint32_t attempt = 1; attempt <= 3; ++attempt) {
    const auto claimed = jobs.claim(owner, 1);
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].attempt == attempt);
    const std::vector<queue::completion> failure{
        {claimed[0].ref, attempt, queue::outcome::retry("provider said no for " + token)}};
    const auto completed = jobs.complete(owner, failure);
    REQUIRE(completed.size() == 1);
    if (attempt == 3) {
      CHECK(completed[0].state == queue::job_state::failed);
      break;
    }
    CHECK(completed[0].state == queue::job_state::retryable);
    const auto delay = queue::backoff_delay(attempt, backoff, expected_random);
    const auto due = clock() + delay;
    // Exactly the delay the seeded generator gives, on the injected clock.
    CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE job_id = " + std::to_string(id) +
                               " AND run_at = '" + queue::timestamp_text(due) + "'::timestamptz") == 1);
    if (delay > 0ms) {
      now_us += std::chrono::duration_cast<std::chrono::microseconds>(delay - 1ms).count();
      CHECK(jobs.claim(owner, 1).empty());
      now_us += 1'000;
    }
  }

  const auto admin = database.connect_as_admin();
  {
    pqxx::work tx(*admin);
    const auto row = tx.exec_params1("SELECT failure, last_error FROM bankworker.jobs WHERE job_id = $1", id);
    CHECK(row[0].as<std::string>() == "attempts_exhausted");
    const std::string error = row[1].as<std::string>();
    CHECK(error.find("provider said no") != std::string::npos);
    CHECK(error.find("4f0a2b6c") == std::string::npos);  // the token is redacted
  }
  CHECK(jobs.claim(owner, 1).empty());
  const auto revived_state = jobs.retry(id);
  REQUIRE(revived_state.has_value());
  CHECK(revived_state->state == queue::job_state::available);
  CHECK(revived_state->changed);
  const auto revived = jobs.claim(owner, 1);
  REQUIRE(revived.size() == 1);
  CHECK(revived[0].attempt == 1);
}

TEST_CASE("needs-user-action and permanent failures are dead at once; in-doubt retries flagged for reconciliation",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {.lease = 60'000ms, .backoff = {.base = 1ms, .cap = 1ms}, .clock = {}, .seed = 0});
  jobs.enqueue(noop_jobs(tenant_a, 3));
  const uuid owner = bankworker::crypto::random_uuid();
  const auto claimed = jobs.claim(owner, 3);
  REQUIRE(claimed.size() == 3);
  const std::vector<queue::completion> outcomes{
      {claimed[0].ref, 1, queue::outcome::needs_user_action("ITEM_LOGIN_REQUIRED")},
      {claimed[1].ref, 1, queue::outcome::failed_permanently("malformed payload")},
      {claimed[2].ref, 1, queue::outcome::in_doubt("commit outcome unknown")}};
  const auto completed = jobs.complete(owner, outcomes);
  REQUIRE(completed.size() == 3);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'failed' AND failure = 'needs_user_action'") == 1);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'failed' AND failure = 'permanent'") == 1);
  std::this_thread::sleep_for(20ms);
  const auto again = jobs.claim(owner, 3);
  REQUIRE(again.size() == 1);
  CHECK(again[0].ref == claimed[2].ref);
  CHECK(again[0].in_doubt);
}

TEST_CASE("an expired lease is rescued, a lost lease refuses the completion, release and cancel free jobs",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {.lease = 1'000ms, .backoff = {}, .clock = {}, .seed = 0});
  auto batch = noop_jobs(tenant_a, 4);
  batch[3].connection = connection_a;
  const auto ids = jobs.enqueue(batch);
  const uuid dead = bankworker::crypto::random_uuid();
  const auto claimed = jobs.claim(dead, 2);
  REQUIRE(claimed.size() == 2);
  CHECK(jobs.rescue_expired() == 0);
  std::this_thread::sleep_for(1'100ms);
  CHECK(jobs.extend_leases(dead, std::vector{claimed[1].ref}).size() == 1);  // still ours until rescued
  CHECK(jobs.rescue_expired() == 1);
  CHECK(job_state(database, claimed[0].ref.id) == "available");
  const std::vector<queue::completion> late{{claimed[0].ref, 1, queue::outcome::done()}};
  CHECK(jobs.complete(dead, late).empty());

  // Release gives a job back without spending its attempt.
  CHECK(jobs.release(dead, std::vector{claimed[1].ref}) == 1);
  CHECK(scalar(database, "SELECT attempt FROM bankworker.jobs WHERE job_id = " + std::to_string(claimed[1].ref.id)) == 0);

  // Cancel by id, including a running job, whose holder then loses its lease.
  const uuid owner = bankworker::crypto::random_uuid();
  const auto running = jobs.claim(owner, 1);
  REQUIRE(running.size() == 1);
  const auto cancelled = jobs.cancel(running[0].ref.id);
  REQUIRE(cancelled.has_value());
  CHECK(cancelled->state == queue::job_state::cancelled);
  CHECK(cancelled->changed);
  CHECK_FALSE(jobs.cancel(running[0].ref.id)->changed);
  CHECK(jobs.extend_leases(owner, std::vector{running[0].ref}).empty());
  CHECK_FALSE(jobs.cancel(999'999'999).has_value());

  // Cancel by connection takes the connection's pending jobs only.
  {
    db::pool::lease lease = connections->checkout();
    pqxx::work tx(lease.connection());
    CHECK(jobs.cancel_connection(tx, tenant_a, connection_a, std::nullopt) == 1);
    tx.commit();
  }
  CHECK(job_state(database, ids[3]) == "cancelled");

  // Retention prunes finished jobs in bounded batches.
  CHECK(jobs.prune(0h, 0h, 1) == 2);
}

TEST_CASE("every attempt that did not succeed is kept with its error, time and worker; successes write none",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {.lease = 1'000ms, .backoff = {.base = 1ms, .cap = 1ms}, .clock = {}, .seed = 0});
  auto failing = noop_jobs(tenant_a, 1);
  failing[0].attempts_max = 4;
  const std::int64_t id = jobs.enqueue(failing).at(0);
  const std::string token = "access-sandbox-4f0a2b6c-1d2e-4f3a-9b8c-7d6e5f4a3b2c";
  const uuid first = bankworker::crypto::random_uuid();
  const uuid second = bankworker::crypto::random_uuid();
  const uuid vanished = bankworker::crypto::random_uuid();
  const uuid last = bankworker::crypto::random_uuid();

  // Attempt 1 retries, 2 ends in doubt, 3's worker stops renewing its lease, 4 needs the user.
  const auto finish = [&](const uuid& owner, std::uint32_t attempt, queue::outcome result) {
    std::this_thread::sleep_for(5ms);  // past the 1 ms backoff
    const auto claimed = jobs.claim(owner, 1);
    REQUIRE(claimed.size() == 1);
    REQUIRE(claimed[0].attempt == attempt);
    REQUIRE(jobs.complete(owner, std::vector{queue::completion{claimed[0].ref, attempt, std::move(result)}}).size() == 1);
  };
  finish(first, 1, queue::outcome::retry("HTTP 500 for " + token));
  finish(second, 2, queue::outcome::in_doubt("commit outcome unknown"));
  std::this_thread::sleep_for(5ms);  // past the 1 ms backoff, as finish() waits
  REQUIRE(jobs.claim(vanished, 1).size() == 1);
  std::this_thread::sleep_for(1'100ms);
  REQUIRE(jobs.rescue_expired() == 1);
  finish(last, 4, queue::outcome::needs_user_action("ITEM_LOGIN_REQUIRED"));

  // A job that succeeds at once leaves no attempt behind.
  const std::int64_t healthy = jobs.enqueue(noop_jobs(tenant_a, 1)).at(0);
  const auto claimed = jobs.claim(first, 1);
  REQUIRE(claimed.size() == 1);
  REQUIRE(claimed[0].ref.id == healthy);
  REQUIRE(jobs.complete(first, std::vector{queue::completion{claimed[0].ref, 1, queue::outcome::done()}}).size() == 1);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.job_attempts WHERE job_id = " + std::to_string(healthy)) == 0);
  REQUIRE(jobs.details(healthy).has_value());
  CHECK(jobs.details(healthy)->attempts.empty());

  const auto details = jobs.details(id);
  REQUIRE(details.has_value());
  CHECK(details->summary.state == queue::job_state::failed);
  const auto& attempts = details->attempts;
  REQUIRE(attempts.size() == 4);
  const std::vector<std::tuple<std::uint32_t, std::string, uuid, std::string>> expected{
      {4, "needs_user_action", last, "ITEM_LOGIN_REQUIRED"},
      {3, "lease_expired", vanished, "lease expired"},
      {2, "in_doubt", second, "commit outcome unknown"},
      {1, "retry", first, "HTTP 500 for "}};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto& [attempt, outcome, worker, error] = expected[i];
    INFO("attempt " << attempt);
    CHECK(attempts[i].attempt == attempt);
    CHECK(attempts[i].outcome == outcome);
    CHECK(attempts[i].worker == worker.to_string());
    REQUIRE(attempts[i].error.has_value());
    CHECK(attempts[i].error->find(error) != std::string::npos);
    CHECK(attempts[i].started_at.has_value());
    CHECK_FALSE(attempts[i].finished_at.empty());
  }
  CHECK(attempts[3].error->find("4f0a2b6c") == std::string::npos);  // stored redacted, like last_error
  CHECK(attempts[0].finished_at >= attempts[3].finished_at);

  // A batch of more than 256 (the set-based completion) records its failures too.
  jobs.enqueue(noop_jobs(tenant_b, 300));
  const auto many = jobs.claim(second, 300);
  REQUIRE(many.size() == 300);
  std::vector<queue::completion> outcomes;
  for (const auto& job : many) outcomes.push_back({job.ref, 1, queue::outcome::retry("rate limited")});
  REQUIRE(jobs.complete(second, outcomes).size() == 300);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.job_attempts WHERE tenant_id = '" + tenant_b.to_string() +
                             "' AND outcome = 'retry' AND error = 'rate limited' AND worker = '" +
                             second.to_string() + "'") == 300);

  // Attempts go with their job when it is pruned.
  CHECK(jobs.prune(0h, 0h) == 2);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.job_attempts WHERE job_id = " + std::to_string(id)) == 0);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.job_attempts") == 300);
}

TEST_CASE("jobs of a claim whose answer was lost go back uncounted; the jobs the worker holds and others' stay",
          "[pg][queue][failover]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {.lease = 60'000ms, .backoff = {}, .clock = {}, .seed = 0});
  jobs.enqueue(noop_jobs(tenant_a, 3));
  jobs.enqueue(noop_jobs(tenant_b, 2));
  const uuid worker = bankworker::crypto::random_uuid();
  const uuid other = bankworker::crypto::random_uuid();
  const auto held = jobs.claim(worker, 1);
  const auto lost = jobs.claim(worker, 2);  // as if this claim's answer never arrived
  const auto others = jobs.claim(other, 2);
  REQUIRE(held.size() == 1);
  REQUIRE(lost.size() == 2);
  REQUIRE(others.size() == 2);

  CHECK(jobs.release_unknown(worker, std::vector{held[0].ref}) == 2);
  for (const auto& job : lost) {
    CHECK(job_state(database, job.ref.id) == "available");
    CHECK(scalar(database, "SELECT attempt FROM bankworker.jobs WHERE job_id = " + std::to_string(job.ref.id)) == 0);
  }
  CHECK(job_state(database, held[0].ref.id) == "running");
  CHECK(jobs.extend_leases(worker, std::vector{held[0].ref}).size() == 1);
  for (const auto& job : others) CHECK(job_state(database, job.ref.id) == "running");
  // Holding nothing, everything still leased to it goes back; a second call finds nothing.
  CHECK(jobs.release_unknown(worker, {}) == 1);
  CHECK(jobs.release_unknown(worker, {}) == 0);
  CHECK(job_state(database, others[0].ref.id) == "running");
}

TEST_CASE("a batch completion records only the jobs whose lease it still holds; unequal arrays are refused",
          "[pg][queue]") {
  // Batches of up to 256 jobs and larger ones take different statements (migration 0019).
  const std::size_t size = GENERATE(std::size_t{4}, std::size_t{300});
  INFO("batch of " << size);
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  jobs.enqueue(noop_jobs(tenant_a, size));
  const uuid owner = bankworker::crypto::random_uuid();
  const auto claimed = jobs.claim(owner, size);
  REQUIRE(claimed.size() == size);
  const uuid other = bankworker::crypto::random_uuid();

  // The first job is cancelled while it runs; the second is taken over by another owner (as after
  // a rescue and a new claim): both leases are lost. The other two are still this owner's.
  REQUIRE(jobs.cancel(claimed[0].ref.id)->changed);
  {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params0("UPDATE bankworker.jobs SET lease_owner = $1 WHERE job_id = $2", other.to_string(),
                    claimed[1].ref.id);
    tx.commit();
  }
  std::vector<queue::completion> outcomes;
  for (const auto& job : claimed) outcomes.push_back({job.ref, job.attempt, queue::outcome::done()});
  outcomes[3].result = queue::outcome::retry("try again", 60'000ms);
  const auto recorded = jobs.complete(owner, outcomes);
  REQUIRE(recorded.size() == size - 2);
  CHECK(job_state(database, claimed[0].ref.id) == "cancelled");
  CHECK(job_state(database, claimed[1].ref.id) == "running");
  CHECK(job_state(database, claimed[2].ref.id) == "succeeded");
  CHECK(job_state(database, claimed[3].ref.id) == "retryable");
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded'") == static_cast<long>(size) - 3);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE job_id = " + std::to_string(claimed[1].ref.id) +
                             " AND lease_owner = '" + other.to_string() + "'") == 1);

  // A caller that sends arrays of different lengths gets an error, not a partial completion.
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  try {
    tx.exec_params("SELECT * FROM bankworker.complete_jobs($1::uuid, ARRAY[$2::uuid, $2::uuid], ARRAY[$3::bigint],"
                   " ARRAY['done', 'done'], ARRAY[0, 0]::bigint[], ARRAY[NULL, NULL]::text[], NULL)",
                   owner.to_string(), tenant_a.to_string(), claimed[1].ref.id);
    FAIL("unequal arrays were accepted");
  } catch (const pqxx::sql_error& error) {
    CHECK(error.sqlstate() == "22023");
    CHECK(std::string(error.what()).find("differ in length") != std::string::npos);
  }
}

TEST_CASE("request_sync from 8 connections at once leaves one waiting sync, and one follow-up while it runs",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto key = bankworker::test::scope_key::random("queue");
  {
    pqxx::connection admin(database.url());
    pqxx::work tx(admin);
    bankworker::test::add_scope_key(tx, key);
    tx.commit();
  }
  const std::string token_a = bankworker::test::mint_scope_token(key, tenant_a.to_string(), bankworker::test::unix_now() + 300);
  const std::string app_url = database.app_url();  // made once, before the threads
  constexpr int callers = 8;
  const auto request_all = [&] {
    std::vector<std::int64_t> ids(callers);
    std::barrier start(callers);
    std::vector<std::thread> threads;
    for (int i = 0; i < callers; ++i) {
      threads.emplace_back([&, i] {
        pqxx::connection app(app_url);
        pqxx::work tx(app);
        tx.exec_params("SELECT bankworker.enter_tenant($1)", token_a);
        start.arrive_and_wait();
        ids[i] = tx.exec_params1("SELECT bankworker.request_sync($1, $2)", tenant_a.to_string(),
                                 connection_a.to_string())[0]
                     .as<std::int64_t>();
        tx.commit();
      });
    }
    for (auto& thread : threads) thread.join();
    return ids;
  };
  const auto first = request_all();
  CHECK(std::set(first.begin(), first.end()).size() == 1);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'plaid.sync'") == 1);

  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  const uuid owner = bankworker::crypto::random_uuid();
  const auto running = jobs.claim(owner, 10);
  REQUIRE(running.size() == 1);
  CHECK(running[0].priority == queue::priority::sync);

  const auto second = request_all();
  CHECK(std::set(second.begin(), second.end()).size() == 1);
  CHECK(second[0] != first[0]);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'plaid.sync'") == 2);
  // The follow-up waits while the first sync runs: never two syncs of one connection at once.
  CHECK(jobs.claim(owner, 10).empty());
  const std::vector<queue::completion> done{{running[0].ref, 1, queue::outcome::done()}};
  jobs.complete(owner, done);
  const auto follow_up = jobs.claim(owner, 10);
  REQUIRE(follow_up.size() == 1);
  CHECK(follow_up[0].ref.id == second[0]);
}

TEST_CASE("bankworker_app may request work for its own tenant's connections and do nothing else with jobs",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto key = bankworker::test::scope_key::random("queue");
  {
    pqxx::connection admin(database.url());
    pqxx::work tx(admin);
    bankworker::test::add_scope_key(tx, key);
    tx.commit();
  }
  pqxx::connection app(database.app_url());
  const auto as_app = [&](const uuid* scope, const std::string& sql) -> std::string {
    try {
      pqxx::work tx(app);
      if (scope != nullptr) {
        tx.exec_params("SELECT bankworker.enter_tenant($1)",
                       bankworker::test::mint_scope_token(key, scope->to_string(), bankworker::test::unix_now() + 300));
      }
      tx.exec(sql);
      tx.commit();
      return "ok";
    } catch (const pqxx::sql_error& error) {
      return error.what();
    }
  };
  const std::string a = "'" + tenant_a.to_string() + "'";
  const std::string b = "'" + tenant_b.to_string() + "'";
  const std::string ca = "'" + connection_a.to_string() + "'";
  const std::string cb = "'" + connection_b.to_string() + "'";

  CHECK(as_app(&tenant_a, "SELECT bankworker.request_sync(" + a + ", " + ca + ")") == "ok");
  CHECK(as_app(&tenant_a, "SELECT bankworker.request_revoke(" + a + ", " + ca + ")") == "ok");
  CHECK(as_app(&tenant_a, "SELECT bankworker.link_plaid(" + a + ", 'public-sandbox-x')") == "ok");
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE tenant_id = " + a) == 3);

  // Another tenant's connection, another tenant, or no tenant scope at all: refused.
  CHECK_THAT(as_app(&tenant_a, "SELECT bankworker.request_sync(" + a + ", " + cb + ")"),
             Catch::Contains("does not belong"));
  CHECK_THAT(as_app(&tenant_a, "SELECT bankworker.request_sync(" + b + ", " + cb + ")"),
             Catch::Contains("not the tenant"));
  CHECK_THAT(as_app(&tenant_a, "SELECT bankworker.request_revoke(" + b + ", " + cb + ")"),
             Catch::Contains("not the tenant"));
  CHECK_THAT(as_app(&tenant_a, "SELECT bankworker.link_plaid(" + b + ", 'public-sandbox-x')"),
             Catch::Contains("not the tenant"));
  CHECK_THAT(as_app(nullptr, "SELECT bankworker.request_sync(" + a + ", " + ca + ")"),
             Catch::Contains("no verified tenant scope"));
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE tenant_id = " + b) == 0);

  // Nothing else: not the table, not the machinery.
  for (const std::string& sql :
       {std::string("SELECT count(*) FROM bankworker.jobs"), std::string("DELETE FROM bankworker.jobs"),
        "INSERT INTO bankworker.jobs (tenant_id, kind) VALUES (" + a + ", 'test.noop')",
        std::string("UPDATE bankworker.jobs SET priority = 0"),
        "SELECT * FROM bankworker.claim_jobs(" + a + ", 10, 60000, NULL, NULL)",
        std::string("SELECT bankworker.cancel_job(1)"), std::string("SELECT bankworker.retry_job(1)"),
        std::string("SELECT * FROM bankworker.list_jobs(NULL, NULL, NULL, 10)"),
        std::string("SELECT bankworker.rescue_expired_jobs(10, NULL)"),
        std::string("SELECT bankworker.prune_jobs(now(), now(), 10)"),
        "SELECT * FROM bankworker.enqueue_jobs(ARRAY[" + a + "::uuid], ARRAY['x'], ARRAY['{}'::jsonb],"
        " ARRAY[1::smallint], ARRAY[NULL::timestamptz], ARRAY[NULL::text], ARRAY[NULL::uuid], ARRAY[1])"}) {
    INFO(sql);
    CHECK_THAT(as_app(&tenant_a, sql), Catch::Contains("permission denied"));
  }
}

TEST_CASE("a tenant-scoped transaction enqueues only its own tenant's jobs and sees only those", "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  db::pool::lease lease = connections->checkout();
  {
    pqxx::work tx(lease.connection());
    tx.exec_prepared(db::set_tenant_statement, tenant_a.to_string());
    CHECK(queue::enqueue(tx, noop_jobs(tenant_a, 2)).size() == 2);
    CHECK_THROWS_AS(queue::enqueue(tx, noop_jobs(tenant_b, 1)), pqxx::insufficient_privilege);
  }
  queue::job_queue jobs(*connections, {});
  jobs.enqueue(noop_jobs(tenant_b, 3));
  pqxx::work tx(lease.connection());
  tx.exec_prepared(db::set_tenant_statement, tenant_b.to_string());
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.jobs")[0].as<int>() == 3);
}

TEST_CASE("two worker processes over 10,000 jobs run every job exactly once", "[pg][queue][process]") {
  const scratch_database database;
  insert_tenants(database);
  create_effects_table(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  jobs.enqueue(noop_jobs(tenant_a, 5'000));
  jobs.enqueue(noop_jobs(tenant_b, 5'000));

  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  child_process first(QUEUE_CLAIM_LOOP_BINARY, {"--batch", "50"}, env);
  child_process second(QUEUE_CLAIM_LOOP_BINARY, {"--batch", "50"}, env);
  CHECK(first.wait(240s) == 0);
  CHECK(second.wait(240s) == 0);

  CHECK(scalar(database, "SELECT count(*) FROM public.effects") == 10'000);
  CHECK(scalar(database, "SELECT count(DISTINCT job_id) FROM public.effects") == 10'000);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded' AND attempt = 1") == 10'000);
  // Both processes did real work: the claims interleaved rather than one process taking all.
  CHECK(scalar(database, "SELECT count(DISTINCT pid) FROM public.effects") == 2);
}

TEST_CASE("jobs of a worker killed with SIGKILL run again within lease + 30 s and no effect commits twice",
          "[pg][queue][process]") {
  const scratch_database database;
  insert_tenants(database);
  create_effects_table(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  jobs.enqueue(noop_jobs(tenant_a, 200));

  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};
  constexpr auto lease = 2'000ms;
  child_process doomed(QUEUE_CLAIM_LOOP_BINARY,
                       {"--batch", "40", "--lease-ms", std::to_string(lease.count()), "--stall-after", "15"}, env);
  REQUIRE(doomed.read_line(60s) == "ready");
  REQUIRE(doomed.read_line(60s) == "stalled");
  // It holds 25 leases and an uncommitted effect when it dies.
  doomed.signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  CHECK(doomed.wait(10s) == -1);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'running'") == 25);

  child_process survivor(QUEUE_CLAIM_LOOP_BINARY, {"--batch", "40", "--lease-ms", "2000"}, env);
  // The survivor exits when a claim is empty; the dead worker's jobs may still be leased then, so
  // keep starting survivors until every job is done or the deadline passes.
  CHECK(survivor.wait(60s) == 0);
  const auto deadline = killed_at + lease + 30s;
  while (scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state <> 'succeeded'") > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    child_process again(QUEUE_CLAIM_LOOP_BINARY, {"--batch", "40", "--lease-ms", "2000"}, env);
    CHECK(again.wait(60s) == 0);
    std::this_thread::sleep_for(200ms);
  }
  CHECK(std::chrono::steady_clock::now() < deadline);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded'") == 200);
  CHECK(scalar(database, "SELECT count(*) FROM public.effects") == 200);
  CHECK(scalar(database, "SELECT count(DISTINCT job_id) FROM public.effects") == 200);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE attempt = 2") == 25);
}

TEST_CASE("a running sync that fails or loses its lease while its follow-up waits gives way to the follow-up",
          "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {.lease = 1'000ms, .backoff = {}, .clock = {}, .seed = 0});
  const auto sync_job = [] {
    auto job = noop_jobs(tenant_a, 1);
    job[0].kind = "plaid.sync";
    job[0].unique_key = "plaid.sync:" + connection_a.to_string();
    job[0].connection = connection_a;
    return job;
  };
  const uuid owner = bankworker::crypto::random_uuid();

  // Fails while a follow-up waits: cancelled as superseded, since two waiting syncs cannot exist.
  REQUIRE(jobs.enqueue(sync_job()).size() == 1);
  const auto first = jobs.claim(owner, 1);
  REQUIRE(first.size() == 1);
  const auto follow_up = jobs.enqueue(sync_job());
  REQUIRE(follow_up.size() == 1);
  CHECK(jobs.enqueue(sync_job()).empty());  // a third request while the follow-up waits is a no-op
  const std::vector<queue::completion> failed{{first[0].ref, 1, queue::outcome::retry("HTTP 503")}};
  const auto completed = jobs.complete(owner, failed);
  REQUIRE(completed.size() == 1);
  CHECK(completed[0].state == queue::job_state::cancelled);

  // Loses its lease while a follow-up waits: the rescue cancels it the same way.
  const auto second = jobs.claim(owner, 1);
  REQUIRE(second.size() == 1);
  CHECK(second[0].ref.id == follow_up[0]);
  const auto third = jobs.enqueue(sync_job());
  REQUIRE(third.size() == 1);
  std::this_thread::sleep_for(1'100ms);
  CHECK(jobs.rescue_expired() == 1);
  CHECK(job_state(database, second[0].ref.id) == "cancelled");
  CHECK(job_state(database, third[0]) == "available");
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state IN ('available', 'retryable', 'running')") == 1);
}

TEST_CASE("a request folded into a waiting job keeps that job from running until the requester commits",
          "[pg][queue]") {
  // The demo's race: a sync stored deposits and asked for a match in one transaction; the match job
  // already waiting ran before the sync committed and never saw the deposits.
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database, 3);
  queue::job_queue jobs(*connections, {});
  const auto match_job = [](const uuid& tenant) {
    auto job = noop_jobs(tenant, 1);
    job[0].kind = "reconcile.match";
    job[0].unique_key = "reconcile.match";
    return job;
  };
  const auto waiting = jobs.enqueue(match_job(tenant_a));
  REQUIRE(waiting.size() == 1);
  const uuid owner = bankworker::crypto::random_uuid();

  db::pool::lease requester = connections->checkout();
  auto open = std::make_unique<pqxx::work>(requester.connection());
  open->exec_prepared(db::set_tenant_statement, tenant_a.to_string());
  // Folded: no new job and no id, as before.
  CHECK(queue::enqueue(*open, match_job(tenant_a)).empty());
  // While the requester's transaction is open the waiting job is not claimed; other work is.
  jobs.enqueue(match_job(tenant_b));
  const auto meanwhile = jobs.claim(owner, 10);
  REQUIRE(meanwhile.size() == 1);
  CHECK(meanwhile[0].ref.tenant == tenant_b);
  open->commit();
  open.reset();
  const auto after = jobs.claim(owner, 10);
  REQUIRE(after.size() == 1);
  CHECK(after[0].ref.id == waiting[0]);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'reconcile.match'") == 2);

  // A requester whose transaction rolls back leaves the waiting job as it was, claimable (once the
  // running job of its key is done: never two runs of one key at once).
  const std::vector<queue::completion> done{{after[0].ref, 1, queue::outcome::done()}};
  jobs.complete(owner, done);
  const auto next = jobs.enqueue(match_job(tenant_a));
  REQUIRE(next.size() == 1);
  {
    pqxx::work rolled_back(requester.connection());
    rolled_back.exec_prepared(db::set_tenant_statement, tenant_a.to_string());
    CHECK(queue::enqueue(rolled_back, match_job(tenant_a)).empty());
  }
  const auto claimed = jobs.claim(owner, 10);
  REQUIRE(claimed.size() == 1);
  CHECK(claimed[0].ref.id == next[0]);
}

TEST_CASE("a batch that names one unique key twice enqueues it once", "[pg][queue]") {
  const scratch_database database;
  insert_tenants(database);
  const auto connections = queue_pool(database);
  queue::job_queue jobs(*connections, {});
  auto batch = noop_jobs(tenant_a, 5);
  batch[1].unique_key = "k";
  batch[3].unique_key = "k";
  batch[4].unique_key = "j";
  CHECK(jobs.enqueue(batch).size() == 4);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE unique_key = 'k'") == 1);
  CHECK(jobs.enqueue(batch).size() == 2);  // the two unkeyed jobs; both keys fold into their waiting jobs
}
