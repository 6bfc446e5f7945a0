#pragma once
// A raw HTTP/1.1 client socket for tests that need what libcurl hides: one kept-alive connection
// used across an event (SIGHUP), a chosen loopback source address (127.0.0.N, to test per-address
// limits), hand-written malformed requests, and thousands of idle connections.

#include <cstdint>
#include <string>
#include <string_view>

namespace bankworker::test {

class raw_connection {
 public:
  // Connects to 127.0.0.1:`port` from `source_address` (any 127.0.0.0/8 address on Linux). A
  // connection that could not be made is reported by connected(), not thrown: flood tests count.
  explicit raw_connection(std::uint16_t port, const std::string& source_address = "127.0.0.1");
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;
  ~raw_connection();

  bool connected() const noexcept { return connected_; }
  // Sends all of `bytes` (false when the peer is gone).
  bool send(std::string_view bytes) const;
  // Reads one whole response (head and Content-Length body), or what came before the peer closed
  // or `timeout_ms` passed.
  std::string read_response(int timeout_ms = 5'000) const;
  // Whether the peer closed the connection within `timeout_ms` (bytes it sends meanwhile are dropped).
  bool closed_within(int timeout_ms) const;

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// The status code of a raw response ("HTTP/1.1 200 OK…" → 200), 0 when there is none.
int status_of(const std::string& response);

}  // namespace bankworker::test
