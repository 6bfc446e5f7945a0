#include "tests/support/tcp_proxy.hpp"

#include <array>
#include <atomic>
#include <condition_variable>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

namespace bankworker::test {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// One proxied connection: two sockets and a buffer for each direction.
struct link : std::enable_shared_from_this<link> {
  explicit link(asio::io_context& io) : client(io), server(io) {}
  tcp::socket client;
  tcp::socket server;
  std::array<char, 16384> up{};
  std::array<char, 16384> down{};

  void close() {
    boost::system::error_code ignored;
    client.close(ignored);
    server.close(ignored);
  }

  void pump(tcp::socket& from, tcp::socket& to, std::array<char, 16384>& buffer) {
    from.async_read_some(asio::buffer(buffer), [self = shared_from_this(), &from, &to, &buffer](
                                                   const boost::system::error_code& error, std::size_t bytes) {
      if (error) {
        self->close();
        return;
      }
      asio::async_write(to, asio::buffer(buffer.data(), bytes),
                        [self, &from, &to, &buffer](const boost::system::error_code& write_error, std::size_t) {
                          if (write_error) {
                            self->close();
                            return;
                          }
                          self->pump(from, to, buffer);
                        });
    });
  }
};

}  // namespace

struct tcp_proxy::state : std::enable_shared_from_this<tcp_proxy::state> {
  state(std::string host, std::uint16_t port)
      : target(asio::ip::make_address(host), port), acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}

  void accept() {
    auto next = std::make_shared<link>(io);
    acceptor.async_accept(next->client, [self = shared_from_this(), next](const boost::system::error_code& error) {
      if (error) return;
      if (self->down.load()) {
        next->close();
      } else {
        boost::system::error_code connect_error;
        next->server.connect(self->target, connect_error);
        if (connect_error) {
          next->close();
        } else {
          self->links.push_back(next);
          next->pump(next->client, next->server, next->up);
          next->pump(next->server, next->client, next->down);
        }
      }
      self->accept();
    });
  }

  asio::io_context io;
  tcp::endpoint target;
  tcp::acceptor acceptor;
  std::atomic<bool> down{false};
  std::list<std::weak_ptr<link>> links;  // io thread only
  std::thread runner;
};

tcp_proxy::tcp_proxy(std::string target_host, std::uint16_t target_port)
    : state_(std::make_shared<state>(std::move(target_host), target_port)) {
  state_->accept();
  state_->runner = std::thread([s = state_] { s->io.run(); });
}

tcp_proxy::~tcp_proxy() {
  state_->io.stop();
  state_->runner.join();
  // The pending handlers hold the state (the accept) and the links (their pumps) alive, and the
  // io_context holding those handlers belongs to the state: a cycle nothing would ever free.
  // Close everything and let the cancelled handlers run once here (the io thread is gone), so that
  // they end without re-arming and release what they hold.
  boost::system::error_code ignored;
  state_->acceptor.close(ignored);
  for (auto& weak : state_->links) {
    if (auto live = weak.lock()) live->close();
  }
  state_->links.clear();
  state_->io.restart();
  state_->io.poll();
}

std::uint16_t tcp_proxy::port() const noexcept { return state_->acceptor.local_endpoint().port(); }

void tcp_proxy::set_down(bool down) {
  state_->down.store(down);
  if (!down) return;
  // Close every live connection on the io thread, and wait until it has.
  std::mutex mutex;
  std::condition_variable closed;
  bool done = false;
  asio::post(state_->io, [&] {
    for (auto& weak : state_->links) {
      if (auto live = weak.lock()) live->close();
    }
    state_->links.clear();
    std::lock_guard lock(mutex);
    done = true;
    closed.notify_one();
  });
  std::unique_lock lock(mutex);
  closed.wait(lock, [&] { return done; });
}

std::pair<std::string, std::uint16_t> host_and_port(const std::string& url) {
  const auto at = url.find('@');
  const auto start = at == std::string::npos ? url.find("://") + 3 : at + 1;
  const auto colon = url.find(':', start);
  const auto slash = url.find('/', start);
  if (colon == std::string::npos || slash == std::string::npos || colon > slash) {
    throw std::invalid_argument("expected a postgresql://…@host:port/db URL");
  }
  return {url.substr(start, colon - start),
          static_cast<std::uint16_t>(std::stoul(url.substr(colon + 1, slash - colon - 1)))};
}

std::string url_through(const std::string& url, std::uint16_t port) {
  const auto at = url.find('@');
  const auto start = at == std::string::npos ? url.find("://") + 3 : at + 1;
  const auto slash = url.find('/', start);
  return url.substr(0, start) + "127.0.0.1:" + std::to_string(port) + url.substr(slash);
}

}  // namespace bankworker::test
