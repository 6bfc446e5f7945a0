#pragma once
// The HTTP server (DESIGN.md §3, §6): Boost.Beast, one C++20 coroutine per connection, keep-alive.
//
// Every limit a hostile or broken client could abuse is set: header bytes, body bytes (checked
// against Content-Length before the body is read, and while reading a chunked body, so a too-large
// webhook is answered 413 before a byte of it is hashed), a deadline on reading a request head (a
// slowloris client is dropped), a deadline on reading a body, and caps on connections in total
// and per source address. Routes are exact paths or path prefixes; an unknown path is 404 and a
// known path with another method is 405 with an Allow header.
//
// Framing is never guessed (RFC 9112 §6.3): a request whose Transfer-Encoding is anything but one
// field saying exactly `chunked` (gzip, "chunked, chunked", two fields, one beside Content-Length,
// or any in HTTP/1.0) is answered 400 and the connection closed, so bytes the server cannot frame
// are never read as a further request. Every refusal (400, 413, 431) is followed by a lingering
// close, as nginx does: the server stops writing, then reads and drops what the client is still
// sending (bounded by linger_timeout and linger_bytes_max) before closing, so a client still
// sending its body reads the answer instead of a connection reset.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "service/config.hpp"
#include "service/http.hpp"

namespace bankworker::worker {

using service::settings;
using service::listen_address;

using service::http_handler;
using service::http_request;
using service::http_response;
using service::http_route;

struct http_settings {
  listen_address listen{"127.0.0.1", 8080};  // port 0 picks a free port (tests)
  std::size_t header_bytes_max = 16 * 1024;
  std::size_t body_bytes_max = 1 << 20;
  // Time to read one request head, including the wait for it on a kept-alive connection.
  std::chrono::milliseconds header_timeout{10'000};
  // Time to read one request body once its head is in.
  std::chrono::milliseconds body_timeout{30'000};
  // Time to write one response.
  std::chrono::milliseconds write_timeout{10'000};
  // After a refusal: how long, and how many bytes, the server reads and drops before it closes.
  // 5 s is nginx's lingering_timeout; a connection in its lingering close still holds its slot,
  // so a client gains nothing it could not have by sending its head slowly (header_timeout).
  std::chrono::milliseconds linger_timeout{5'000};
  std::size_t linger_bytes_max = 64 << 20;
  std::size_t connections_max = 2'048;
  std::size_t connections_per_address_max = 128;
  std::size_t requests_per_connection_max = 10'000;
  // Called after each routed request with the route that answered (nothing for 404/405), the
  // status and the handler's time; for latency metrics. Must not block.
  std::function<void(const http_route* route, unsigned status, std::chrono::microseconds elapsed)> observe;
  // Called when a body is refused with 413 before any handler saw it, with the route it was sent
  // to (nothing when none matches); for the routes' own metrics. Must not block.
  std::function<void(const http_route* route)> observe_too_large;
};

// Counts of what the server refused, for metrics and tests.
struct http_counters {
  std::uint64_t requests = 0;
  std::uint64_t too_large = 0;
  std::uint64_t header_timeouts = 0;
  std::uint64_t refused_connections = 0;
  std::uint64_t bad_requests = 0;
};

// Formats the status line and fields of `answer` into `out` (replacing what it held), as written
// before its body: Server and Content-Type unless the handler set its own, the handler's fields
// (Set-Cookie may repeat; any other field set twice keeps its last value), Content-Length, and
// Connection when `keep_alive` differs from the version's default. False, with nothing usable in
// `out`, when a field could split the head (a name that is not a token; CR, LF or NUL in a value),
// names a field the server frames itself (Content-Length, Transfer-Encoding, Connection), or the
// status cannot carry the body.
bool format_response_head(const http_response& answer, unsigned version, bool keep_alive, std::string& out);

class http_server {
 public:
  // `io` must outlive the server; the routes are fixed for its lifetime.
  http_server(boost::asio::io_context& io, http_settings settings, std::vector<http_route> routes);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds and starts accepting. Throws std::system_error when the address cannot be bound.
  void start();
  // Stops accepting and ends connections waiting for (or sending) a request; a request already
  // being handled is answered, with Connection: close.
  void stop();

  std::uint16_t port() const noexcept { return port_; }
  http_counters counters() const;

 private:
  struct state;
  std::shared_ptr<state> state_;
  std::uint16_t port_ = 0;
};

}  // namespace bankworker::worker
