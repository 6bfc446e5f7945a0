#pragma once
// A TCP proxy on loopback that a test can cut: it forwards every connection to a target (the
// private PostgreSQL) until set_down(true), which closes every live connection and makes new
// ones close at once, as a database that went away would look to its clients. set_down(false)
// brings it back. Real sockets end to end; nothing in bankworker knows it is there.

#include <cstdint>
#include <memory>
#include <string>

namespace bankworker::test {

class tcp_proxy {
 public:
  tcp_proxy(std::string target_host, std::uint16_t target_port);
  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;
  ~tcp_proxy();

  std::uint16_t port() const noexcept;
  void set_down(bool down);

 private:
  struct state;
  std::shared_ptr<state> state_;
};

// `url` (postgresql://user:pw@host:port/db…) with host and port replaced by 127.0.0.1:`port`.
std::string url_through(const std::string& url, std::uint16_t port);
// The host and port of such a URL.
std::pair<std::string, std::uint16_t> host_and_port(const std::string& url);

}  // namespace bankworker::test
