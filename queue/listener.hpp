#pragma once
// Wake-ups: LISTEN on a dedicated connection whose socket an Asio executor waits on (no polling
// thread). Each notification on the channel calls `on_notify` on the listener's executor.
//
// Notifications are a hint, not a delivery guarantee: they are lost while the connection is down,
// and a silently dead TCP connection may never become readable. The dispatcher's poll fallback
// (at most job_poll_interval_max) bounds the cost of any lost hint, so this class only has to
// reconnect when it notices a failure, after reconnect_delay.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "crypto/secret.hpp"

namespace bankworker::queue {

// A further channel on the same connection (one LISTEN connection per process, whatever it
// listens for). `on_payload` gets each notification's payload; `on_listening` is called each time
// the LISTEN is in place again, since whatever was sent while it was down is lost.
struct listener_channel {
  std::string channel;
  std::function<void(const std::string& payload)> on_payload;
  std::function<void()> on_listening;
};

struct listener_settings {
  std::string channel = "bankworker_jobs";
  std::chrono::milliseconds reconnect_delay{1'000};
  std::chrono::milliseconds statement_timeout{10'000};
  // Told why the connection failed before each reconnect (the dispatcher logs it; a failover is a
  // connection problem, db/connection_problem.hpp, which the pool already reports).
  std::function<void(const std::exception&)> on_error;
};

class listener {
 public:
  // `url` and `blocking` (which opens the connection, a blocking call) must outlive the listener.
  listener(boost::asio::any_io_executor executor, boost::asio::thread_pool& blocking, const crypto::secret& url,
           listener_settings settings, std::function<void()> on_notify);
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener();

  // Connects, LISTENs and waits for notifications until stop(). Runs on the listener's executor;
  // `this` must outlive the coroutine.
  boost::asio::awaitable<void> run();
  // Listens on `extra` too, from the next connection on. Call before run().
  void add_channel(listener_channel extra);
  // Calls `callback` each time the LISTEN is in place, after the channels' on_listening. Call
  // before run().
  void when_listening(std::function<void()> callback);
  // Ends run() soon. Call on the listener's executor.
  void stop();
  // Whether the LISTEN is in place right now (and every on_listening has run).
  bool listening() const noexcept { return listening_.load(); }

 private:
  struct session;

  boost::asio::any_io_executor executor_;
  boost::asio::thread_pool& blocking_;
  const crypto::secret& url_;
  const listener_settings settings_;
  std::function<void()> on_notify_;
  std::vector<listener_channel> extra_channels_;
  std::vector<std::function<void()>> listening_callbacks_;
  std::unique_ptr<session> session_;
  boost::asio::steady_timer retry_timer_;
  bool stopping_ = false;
  std::atomic<bool> listening_{false};
};

}  // namespace bankworker::queue
