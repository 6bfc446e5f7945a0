// A worker process built from the real dispatcher, for the tests that need a whole process:
// SIGTERM while jobs run (drain, release, exit 0).
//
//   queue_dispatch_worker [--concurrency C] [--job-ms M] [--drain-ms D] [--lease-ms L]
//
// Handles kind "test.effect": waits M ms (giving up early when its lease is lost), then inserts
// its row into public.effects in the same transaction as its completion (complete_in), so an
// effect commits exactly when the job does. Prints "ready" once LISTENing, and on exit
// "stats claimed=… finished=… released=…".
#include <signal.h>
#include <sodium.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "queue/queue.hpp"
#include "worker/dispatcher.hpp"

namespace {

using namespace bankworker;
namespace asio = boost::asio;

long option(int argc, char** argv, const std::string& name, long fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return std::strtol(argv[i + 1], nullptr, 10);
  }
  return fallback;
}

class lease_lost_error : public std::runtime_error {
 public:
  lease_lost_error() : std::runtime_error("lease lost before the effect committed") {}
};

// `connections` outlives the io_context (it lives in main).
asio::awaitable<queue::outcome> run_effect(db::pool* connections, std::chrono::milliseconds work, queue::job job,
                                           worker::job_context context) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + work;
  while (std::chrono::steady_clock::now() < deadline && !context.lease_lost()) {
    timer.expires_after(std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(50),
                                                                      deadline - std::chrono::steady_clock::now()));
    co_await timer.async_wait(asio::use_awaitable);
  }
  if (context.lease_lost()) co_return queue::outcome::retry("lease lost");
  co_await context.run_db([connections, &job, &context] {
    db::pool::lease lease = connections->checkout();
    pqxx::work tx(lease.connection());
    tx.exec_params("INSERT INTO public.effects (job_id, pid) VALUES ($1, $2)", job.ref.id, static_cast<int>(::getpid()));
    if (!context.jobs().complete_in(tx, context.owner(), {job.ref, job.attempt, queue::outcome::done()})) {
      throw lease_lost_error();  // rolls the effect back with the transaction
    }
    tx.commit();
  });
  context.mark_completed();
  co_return queue::outcome::done();
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  const char* url = std::getenv("BANKWORKER_DATABASE_URL");
  if (url == nullptr) return 2;
  const auto job_ms = std::chrono::milliseconds(option(argc, argv, "--job-ms", 100));

  db::pool_settings pool_config;
  pool_config.connections = 4;
  db::pool connections(crypto::secret::copy_of(url), std::move(pool_config));
  queue::queue_settings queue_config;
  queue_config.lease = std::chrono::milliseconds(option(argc, argv, "--lease-ms", 60'000));
  queue::job_queue jobs(connections, std::move(queue_config));
  const crypto::secret listen_url = crypto::secret::copy_of(url);
  bankworker::service::logger log(bankworker::service::log_level::info);

  worker::dispatcher_settings settings;
  settings.concurrency = static_cast<std::uint32_t>(option(argc, argv, "--concurrency", 4));
  settings.drain_timeout = std::chrono::milliseconds(option(argc, argv, "--drain-ms", 10'000));
  settings.heartbeat_interval = std::chrono::milliseconds(std::max(500L, option(argc, argv, "--lease-ms", 60'000) / 3));

  asio::io_context io;
  asio::thread_pool blocking(3);
  worker::dispatcher dispatcher(io, blocking, jobs, &listen_url, settings, log);
  dispatcher.add_handler("test.effect", [&connections, job_ms](queue::job job, worker::job_context context) {
    return run_effect(&connections, job_ms, std::move(job), context);
  });

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&dispatcher](const boost::system::error_code& error, int) {
    if (!error) dispatcher.stop();
  });
  bool done = false;
  asio::co_spawn(dispatcher.executor(), dispatcher.run(), [&](std::exception_ptr failure) {
    done = failure == nullptr;
    signals.cancel();
  });
  std::thread announce([&dispatcher] {
    for (int i = 0; i < 600 && !dispatcher.listening(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::cout << "ready" << std::endl;
  });
  io.run();
  announce.join();
  blocking.join();
  const auto& stats = dispatcher.stats();
  std::cout << "stats claimed=" << stats.claimed << " finished=" << stats.finished << " released=" << stats.released
            << std::endl;
  return done ? 0 : 1;
}
