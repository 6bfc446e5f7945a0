// A bare claim loop over the real queue, run as a separate process by the queue tests (two of them
// at once; one killed with SIGKILL while it holds leases).
//
// Each job's effect is one row in public.effects (the test creates that table), inserted in the
// same transaction as the job's completion: complete_in() succeeds only while this process still
// holds the lease, so an effect commits exactly when its completion does.
//
//   queue_claim_loop [--batch N] [--lease-ms L] [--stall-after N]
//
// Prints "ready" once connected. Exits 0 when a claim comes back empty. With --stall-after N it
// finishes N jobs, then inserts the next job's effect, prints "stalled" and sleeps inside that
// transaction without committing (the test then kills it).
#include <sodium.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <pqxx/pqxx>

#include "crypto/random.hpp"
#include "db/pool.hpp"
#include "db/statement.hpp"
#include "queue/queue.hpp"

namespace {

long option(int argc, char** argv, const std::string& name, long fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return std::strtol(argv[i + 1], nullptr, 10);
  }
  return fallback;
}

constexpr bankworker::db::statement insert_effect_sql{"test_insert_effect",
    "INSERT INTO public.effects (job_id, pid) VALUES ($1, $2)"};

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  const char* url = std::getenv("BANKWORKER_DATABASE_URL");
  if (url == nullptr) {
    std::fputs("queue_claim_loop: BANKWORKER_DATABASE_URL is not set\n", stderr);
    return 2;
  }
  const auto batch = static_cast<std::size_t>(option(argc, argv, "--batch", 100));
  const long lease_ms = option(argc, argv, "--lease-ms", 60'000);
  const long stall_after = option(argc, argv, "--stall-after", -1);

  using namespace bankworker;
  db::pool_settings pool_config;
  pool_config.connections = 2;
  db::pool connections(crypto::secret::copy_of(url), std::move(pool_config));
  queue::job_queue jobs(connections, {.lease = std::chrono::milliseconds(lease_ms), .backoff = {}, .clock = {}, .seed = 0});
  const core::uuid owner = crypto::random_uuid();
  std::cout << "ready" << std::endl;

  long finished = 0;
  for (;;) {
    jobs.rescue_expired();
    const std::vector<queue::job> claimed = jobs.claim(owner, batch);
    if (claimed.empty()) break;
    for (const queue::job& job : claimed) {
      db::pool::lease lease = connections.checkout();
      pqxx::work tx(lease.connection());
      db::exec_statement(tx, insert_effect_sql, job.ref.id, static_cast<int>(::getpid()));
      if (finished == stall_after) {
        std::cout << "stalled" << std::endl;
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
      }
      const auto state = jobs.complete_in(tx, owner, {job.ref, job.attempt, queue::outcome::done()});
      if (!state) continue;  // lease lost: the transaction rolls back with the effect
      tx.commit();
      ++finished;
    }
  }
  std::cout << "finished " << finished << std::endl;
  return 0;
}
