#pragma once
// The HTTP server's decisions about one request that need no socket: the parser's limits, the
// answer to a failed read, the request a handler receives, and the route that answers it. The
// server's connection coroutine (http_server.cpp, which defines these next to it) calls exactly
// these, so fuzz/http_request_fuzz.cpp can run the same decisions on bytes read from memory.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "worker/http_server.hpp"

namespace bankworker::worker {

using service::settings;

using http_request_parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// Applies settings.header_bytes_max and settings.body_bytes_max to a parser before its first read.
void limit_request_parser(http_request_parser& parser, const http_settings& settings);

// What the server does at one step of reading a request. With `status` 0 it goes on reading
// (judge_head) or closes without an answer (the judge_*_error functions); otherwise it answers
// `status` with `reason` and closes. `counted` is the counter the step adds one to, if any.
struct read_verdict {
  unsigned status = 0;
  std::string_view reason;
  std::uint64_t http_counters::*counted = nullptr;
};

// After reading a request head failed with `error`.
read_verdict judge_head_error(const boost::beast::error_code& error);
// After a head was read: a Content-Length over body_bytes_max is refused before any body is read.
read_verdict judge_head(const http_request_parser& parser, const http_settings& settings);
// After reading a request body failed with `error`.
read_verdict judge_body_error(const boost::beast::error_code& error);

// The complete message in `parser` as handlers see it; its body is moved out of the parser.
http_request to_http_request(http_request_parser& parser, std::string remote_address);

// The route answering `method` on `path`: the first whose path matches with that method. Without
// one, 404 when `allowed` is empty, else 405 with `allowed` (the methods of the routes whose
// path matched, in route order) as its Allow header.
struct route_choice {
  const http_route* route = nullptr;
  std::string allowed;
};
route_choice choose_route(const std::vector<http_route>& routes, std::string_view method, std::string_view path);

}  // namespace bankworker::worker
