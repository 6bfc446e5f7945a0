#pragma once
// HTTP as a route sees it: the request a handler receives, the response it returns, and the route
// that binds a method and path to it. The server that parses and frames the bytes is the
// runtime's (worker/http_server.hpp); providers define their webhook routes with these types only.

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

namespace bankworker::service {

// ASCII case-insensitive equality, for header names and tokens.
bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept;

struct http_request {
  std::string method;  // "GET", "POST", …
  std::string target;  // path and query as sent
  std::string path;    // target without the query
  std::string body;    // raw bytes exactly as received
  std::string remote_address;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, in order

  // The first header with this name (case-insensitive), or empty when absent.
  std::string_view header(std::string_view name) const noexcept;
};

struct http_response {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using http_handler = std::function<boost::asio::awaitable<http_response>(http_request)>;

struct http_route {
  std::string method;
  std::string path;  // exact path, or a prefix when prefix is true ("/webhooks/stripe/")
  bool prefix = false;
  http_handler handler;
};

}  // namespace bankworker::service
