#include "queue/listener.hpp"

#include <sodium.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::queue {

namespace {

constexpr const char* listen_session_sql =
    "SELECT set_config('statement_timeout', $1, false), set_config('application_name', 'bankworker-listen', false)";

class forwarding_receiver final : public pqxx::notification_receiver {
 public:
  forwarding_receiver(pqxx::connection_base& connection, const std::string& channel, std::function<void()>& target)
      : pqxx::notification_receiver(connection, channel), target_(target) {}
  void operator()(const std::string&, int) override { target_(); }

 private:
  std::function<void()>& target_;
};

class payload_receiver final : public pqxx::notification_receiver {
 public:
  payload_receiver(pqxx::connection_base& connection, const std::string& channel,
                   const std::function<void(const std::string&)>& target)
      : pqxx::notification_receiver(connection, channel), target_(target) {}
  void operator()(const std::string& payload, int) override { target_(payload); }

 private:
  const std::function<void(const std::string&)>& target_;
};

}  // namespace

// One connection's worth of state: the connection, its receiver (which issued LISTEN) and a
// descriptor Asio waits on. The descriptor owns a dup() of libpq's socket, so closing it never
// closes the socket under libpq.
struct listener::session {
  std::unique_ptr<pqxx::connection> connection;
  std::unique_ptr<forwarding_receiver> receiver;
  std::vector<std::unique_ptr<payload_receiver>> extra_receivers;
  std::unique_ptr<boost::asio::posix::stream_descriptor> socket;
};

listener::listener(boost::asio::any_io_executor executor, boost::asio::thread_pool& blocking,
                   const crypto::secret& url, listener_settings settings, std::function<void()> on_notify)
    : executor_(std::move(executor)),
      blocking_(blocking),
      url_(url),
      settings_(std::move(settings)),
      on_notify_(std::move(on_notify)),
      retry_timer_(executor_) {}

listener::~listener() = default;

void listener::add_channel(listener_channel extra) {
  BW_ASSERT(!session_);
  extra_channels_.push_back(std::move(extra));
}

void listener::when_listening(std::function<void()> callback) {
  BW_ASSERT(!session_);
  BW_ASSERT(callback != nullptr);
  listening_callbacks_.push_back(std::move(callback));
}

void listener::stop() {
  stopping_ = true;
  retry_timer_.cancel();
  if (session_ && session_->socket) session_->socket->cancel();
}

boost::asio::awaitable<void> listener::run() {
  while (!stopping_) {
    try {
      // Opening the connection and issuing LISTEN block: they run on the blocking pool.
      auto opened = co_await run_blocking(blocking_, [this]() -> std::unique_ptr<session> {
        auto fresh = std::make_unique<session>();
        std::string url(url_.reveal().text());
        try {
          fresh->connection = std::make_unique<pqxx::connection>(url);
        } catch (...) {
          sodium_memzero(url.data(), url.size());
          throw;
        }
        sodium_memzero(url.data(), url.size());
        {
          pqxx::nontransaction setup(*fresh->connection);
          setup.exec_params(listen_session_sql, std::to_string(settings_.statement_timeout.count()));
        }
        fresh->receiver = std::make_unique<forwarding_receiver>(*fresh->connection, settings_.channel, on_notify_);
        for (const listener_channel& extra : extra_channels_) {
          fresh->extra_receivers.push_back(
              std::make_unique<payload_receiver>(*fresh->connection, extra.channel, extra.on_payload));
        }
        fresh->connection->get_notifs();  // issues the LISTEN now rather than at the first wait
        return fresh;
      });
      if (stopping_) break;
      const int fd = ::dup(opened->connection->sock());
      if (fd < 0) throw std::runtime_error("dup of the listen socket failed");
      opened->socket = std::make_unique<boost::asio::posix::stream_descriptor>(executor_, fd);
      session_ = std::move(opened);
      // Anything enqueued while we were not listening is found by the first claim after this.
      on_notify_();
      for (const listener_channel& extra : extra_channels_) {
        if (extra.on_listening) extra.on_listening();
      }
      listening_ = true;  // after the channels' callbacks: a caller that sees it sees their effects
      for (const auto& callback : listening_callbacks_) callback();
      while (!stopping_) {
        boost::system::error_code error;
        co_await session_->socket->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                              boost::asio::redirect_error(boost::asio::use_awaitable, error));
        if (stopping_) break;
        if (error) throw boost::system::system_error(error);
        // Readable: consume what arrived (non-blocking) and dispatch notifications to the receiver.
        session_->connection->get_notifs();
        if (!session_->connection->is_open()) throw pqxx::broken_connection("listen connection closed");
      }
    } catch (const std::exception& failure) {
      // Lost or refused: the poll fallback covers the gap; try again after reconnect_delay.
      if (settings_.on_error) settings_.on_error(failure);
    }
    listening_ = false;
    session_.reset();
    if (stopping_) break;
    retry_timer_.expires_after(settings_.reconnect_delay);
    boost::system::error_code ignored;
    co_await retry_timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ignored));
  }
  listening_ = false;
  session_.reset();
}

}  // namespace bankworker::queue
