#include "tests/support/raw_http.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace bankworker::test {

raw_connection::raw_connection(std::uint16_t port, const std::string& source_address) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  sockaddr_in source{};
  source.sin_family = AF_INET;
  if (::inet_pton(AF_INET, source_address.c_str(), &source.sin_addr) != 1) return;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) return;
  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(port);
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&target), sizeof target) == 0;
}

raw_connection::~raw_connection() {
  if (fd_ >= 0) ::close(fd_);
}

bool raw_connection::send(std::string_view bytes) const {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

std::string raw_connection::read_response(int timeout_ms) const {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::size_t head_end = data.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const std::size_t length_at = data.find("Content-Length: ");
      if (length_at != std::string::npos && length_at < head_end) {
        const std::size_t length = std::stoul(data.substr(length_at + 16));
        if (data.size() >= head_end + 4 + length) return data;
      }
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buffer[4096];
    const ssize_t got = ::recv(fd_, buffer, sizeof buffer, 0);
    if (got <= 0) return data;
    data.append(buffer, static_cast<std::size_t>(got));
  }
  return data;
}

bool raw_connection::closed_within(int timeout_ms) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) {
      char buffer[4096];
      const ssize_t got = ::recv(fd_, buffer, sizeof buffer, 0);
      if (got <= 0) return true;
    }
  }
  return false;
}

int status_of(const std::string& response) {
  if (!response.starts_with("HTTP/1.") || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

}  // namespace bankworker::test
