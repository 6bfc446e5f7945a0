// The HTTP server's request path on arbitrary bytes, in process and without sockets: the bytes
// are one client connection, read through Beast's parser exactly as http_server.cpp's connection
// loop reads them (worker/http_request_path.hpp: the same parser limits, the same verdicts on a
// failed read or an oversized Content-Length, the same request handed to handlers, the same
// routing), from a memory stream that hands them over in chunks as TCP segments would arrive. The
// routes are the ones runtime.cpp registers, without their handlers (those need the database).
//
// The first byte picks the settings (the server's defaults, or small limits so that the limit
// paths are reached with small inputs) and the chunk size. Beyond "no crash", checks what must
// hold for any input:
// - a refused read answers 400, 413 or 431 with a reason and counts it, or closes silently;
// - a head is refused for its Content-Length exactly when that is over body_bytes_max (413), and
//   for its Transfer-Encoding exactly when that is not one field saying chunked alone (400), so
//   no body whose end is unknown is ever read as a further request;
// - a request that reaches routing has a body within body_bytes_max, of its Content-Length when
//   it has one; its path is its target up to the first '?'; header() finds the first header of
//   that name in any case;
// - routing picks a route with the request's method and a matching path; 404 only when no route's
//   path matches, 405 only when one does, with an Allow list of other methods;
// - a connection serves requests until the client or the server closes it, never more than
//   requests_per_connection_max.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/system/system_error.hpp>

#include "core/uuid.hpp"
#include "worker/http_request_path.hpp"

using namespace bankworker;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

// A SyncReadStream over the input: at most chunk_bytes per read, then end of stream (the client
// closed its side).
class memory_stream {
 public:
  memory_stream(std::string_view bytes, std::size_t chunk_bytes) : remaining_(bytes), chunk_bytes_(chunk_bytes) {}

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    if (remaining_.empty()) {
      ec = boost::asio::error::eof;
      return 0;
    }
    const std::size_t offered = std::min(chunk_bytes_, remaining_.size());
    const std::size_t copied = boost::asio::buffer_copy(buffers, boost::asio::buffer(remaining_.data(), offered));
    remaining_.remove_prefix(copied);
    ec = {};
    return copied;
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    const std::size_t copied = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return copied;
  }

 private:
  std::string_view remaining_;
  std::size_t chunk_bytes_;
};

const std::vector<worker::http_route>& routes() {
  // runtime.cpp's table with the optional Plaid and platform routes present.
  static const std::vector<worker::http_route> table = {
      {"GET", "/healthz", false, {}},           {"GET", "/readyz", false, {}},
      {"GET", "/metrics", false, {}},           {"POST", "/webhooks/stripe/", true, {}},
      {"POST", "/webhooks/plaid", false, {}},   {"POST", "/webhooks/stripe", false, {}}};
  return table;
}

bool path_matches(const worker::http_route& r, std::string_view path) {
  return r.prefix ? path.starts_with(r.path) : path == r.path;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

void require_refusal_shape(const worker::read_verdict& verdict) {
  if (verdict.status == 0) return;
  require(verdict.status == 400 || verdict.status == 413 || verdict.status == 431);
  require(!verdict.reason.empty());
  require(verdict.counted != nullptr);
}

void require_routed_consistently(const worker::http_request& request) {
  const worker::route_choice choice = worker::choose_route(routes(), request.method, request.path);
  const bool any_path = std::any_of(routes().begin(), routes().end(),
                                    [&](const worker::http_route& r) { return path_matches(r, request.path); });
  if (choice.route != nullptr) {
    require(choice.route->method == request.method);
    require(path_matches(*choice.route, request.path));
    // The Stripe tenant route reads the tenant from the rest of the path.
    if (choice.route->prefix) {
      const auto tenant = core::uuid::parse(std::string_view(request.path).substr(choice.route->path.size()));
      if (tenant) require(core::uuid::parse(tenant->to_string()) == tenant);
    }
    return;
  }
  require(choice.allowed.empty() != any_path);
  for (const worker::http_route& r : routes()) {
    if (path_matches(r, request.path)) require(r.method != request.method);
  }
}

void require_well_formed(const worker::http_request& request, const worker::http_settings& settings,
                         const worker::http_request_parser& parser) {
  require(request.body.size() <= settings.body_bytes_max);
  if (parser.content_length()) require(request.body.size() == *parser.content_length());
  require(request.path.find('?') == std::string::npos);
  require(request.target.starts_with(request.path));
  for (const std::string_view name : {"stripe-signature", "Plaid-Verification", "CONTENT-TYPE", "host"}) {
    std::string_view first;
    bool found = false;
    for (const auto& [key, value] : request.headers) {
      if (!found && equal_ignoring_case(key, name)) {
        first = value;
        found = true;
      }
    }
    require(request.header(name) == first);
  }
}

// The oracle for RFC 9112 §6.3, written apart from the server's: a Transfer-Encoding is framed
// only when it is one field, in HTTP/1.1, without Content-Length, naming chunked alone.
bool transfer_encoding_refused(const http::request_header<>& head) {
  if (head.count(http::field::transfer_encoding) == 0) return false;
  if (head.count(http::field::transfer_encoding) != 1 || head.version() != 11) return true;
  if (head.count(http::field::content_length) != 0) return true;
  std::string_view value = head[http::field::transfer_encoding];
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return !equal_ignoring_case(value, "chunked");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  if (size < 1) return 0;
  worker::http_settings settings;
  if (data[0] & 1) {
    settings.header_bytes_max = 256;
    settings.body_bytes_max = 64;
    settings.requests_per_connection_max = 4;
  }
  const std::size_t chunk_bytes = (data[0] >> 1) == 0 ? size : (data[0] >> 1);
  memory_stream stream(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), chunk_bytes);

  // http_server.cpp's connection loop, reading from memory.
  beast::flat_buffer buffer;
  std::size_t served = 0;
  for (; served < settings.requests_per_connection_max; ++served) {
    worker::http_request_parser parser;
    worker::limit_request_parser(parser, settings);
    beast::error_code header_error;
    http::read_header(stream, buffer, parser, header_error);
    if (header_error) {
      const worker::read_verdict verdict = worker::judge_head_error(header_error);
      require_refusal_shape(verdict);
      require(verdict.counted != &worker::http_counters::header_timeouts);  // no clock here
      break;
    }
    const worker::read_verdict head = worker::judge_head(parser, settings);
    const bool declared_too_large = parser.content_length() && *parser.content_length() > settings.body_bytes_max;
    const bool framing_refused = transfer_encoding_refused(parser.get());
    require((head.status != 0) == (declared_too_large || framing_refused));
    if (head.status != 0) {
      require(head.status == (framing_refused ? 400 : 413));
      require(head.counted == (framing_refused ? &worker::http_counters::bad_requests : &worker::http_counters::too_large));
      break;
    }
    if (!parser.is_done()) {
      beast::error_code body_error;
      http::read(stream, buffer, parser, body_error);
      if (body_error) {
        require_refusal_shape(worker::judge_body_error(body_error));
        break;
      }
    }
    require(parser.is_done());
    const bool client_keep_alive = parser.get().keep_alive();
    const worker::http_request request = worker::to_http_request(parser, "192.0.2.1");
    require(request.remote_address == "192.0.2.1");
    require_well_formed(request, settings, parser);
    require_routed_consistently(request);
    if (!client_keep_alive) break;
  }
  require(served <= settings.requests_per_connection_max);
  return 0;
}
