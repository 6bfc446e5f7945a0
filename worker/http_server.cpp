#include "worker/http_server.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <exception>
#include <optional>
#include <span>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "worker/http_request_path.hpp"

namespace bankworker::worker {

using service::settings;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

using service::equal_ignoring_case;

namespace {

constexpr auto as_result = asio::as_tuple(asio::use_awaitable);

// Reads a refused connection's leftovers in pieces of this size, dropping them.
constexpr std::size_t linger_read_bytes = 16 * 1024;

// What each connection's read buffer holds from its start. Beast reads as much as the buffer has
// room for (at least 512 bytes), and its parser empties the buffer as it goes, so a buffer left to
// grow by itself stayed at 512 bytes and a 2 KB webhook took five recvmsg calls (strace -c under
// webhook_load: 5.0 per answer). 8 KiB takes a typical webhook in one; kept-alive connections hold
// it while idle (at most connections_max of them: 16 MiB).
constexpr std::size_t connection_read_bytes = 8 * 1024;

// What each connection reserves for its responses' heads: a webhook answer's head is ~120 bytes,
// the console's with its security fields ~500.
constexpr std::size_t response_head_bytes = 512;

std::string_view trim_whitespace(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// RFC 9112 §6.1 and §6.3: the one transfer coding this server frames is chunked, alone, in one
// field of an HTTP/1.1 request without Content-Length. Beast takes a request with any other
// Transfer-Encoding (gzip, "chunked, chunked", "chunked" outside HTTP/1.1) for one without a body,
// and would read the body as the next request; the body's end is unknown, so it is refused.
// Coding names are case-insensitive (RFC 9112 §7).
bool transfer_encoding_refused(const http::request_header<>& head) {
  const std::size_t fields = head.count(http::field::transfer_encoding);
  if (fields == 0) return false;
  if (fields > 1) return true;
  if (head.version() != 11) return true;
  if (head.count(http::field::content_length) > 0) return true;
  return !equal_ignoring_case(trim_whitespace(head[http::field::transfer_encoding]), "chunked");
}

http_response plain(unsigned status, std::string body) {
  http_response response;
  response.status = status;
  response.body = std::move(body);
  response.body.push_back('\n');
  return response;
}

}  // namespace

void limit_request_parser(http_request_parser& parser, const http_settings& settings) {
  parser.header_limit(static_cast<std::uint32_t>(settings.header_bytes_max));
  parser.body_limit(settings.body_bytes_max);
}

namespace {

// RFC 9110 §5.1 and §5.5: a field name is a token; a value holds no CR, LF or NUL (each could end
// the field, or the head, early: response splitting).
bool is_token_char(char c) noexcept {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_field_safe(std::string_view name, std::string_view value) noexcept {
  if (name.empty() || !std::all_of(name.begin(), name.end(), is_token_char)) return false;
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// The fields the server frames itself: a handler that sets them is refused, not obeyed.
bool is_framing_field(std::string_view name) noexcept {
  return equal_ignoring_case(name, "Content-Length") || equal_ignoring_case(name, "Transfer-Encoding") ||
         equal_ignoring_case(name, "Connection");
}

// Whether a handler field replaces the default of that name, or a later field of its own replaces
// it: Set-Cookie is the one field a response repeats (RFC 6265 §3); every other is set once.
bool is_replaced(std::span<const std::pair<std::string, std::string>> fields, std::size_t at) {
  const std::string_view name = fields[at].first;
  if (equal_ignoring_case(name, "Set-Cookie")) return false;
  return std::any_of(fields.begin() + static_cast<std::ptrdiff_t>(at) + 1, fields.end(),
                     [&](const auto& later) { return equal_ignoring_case(later.first, name); });
}

bool has_field(std::span<const std::pair<std::string, std::string>> fields, std::string_view name) {
  return std::any_of(fields.begin(), fields.end(), [&](const auto& f) { return equal_ignoring_case(f.first, name); });
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name).append(": ").append(value).append("\r\n");
}

}  // namespace

bool format_response_head(const http_response& answer, unsigned version, bool keep_alive, std::string& out) {
  out.clear();
  const auto status = static_cast<http::status>(answer.status);
  // RFC 9110 §15.2, §15.3.5, §15.4.5: no content, and no Content-Length, in these.
  const bool bodiless = answer.status / 100 == 1 || answer.status == 204 || answer.status == 304;
  if (answer.status < 100 || answer.status > 999 || (bodiless && !answer.body.empty())) return false;
  for (const auto& [name, value] : answer.headers) {
    if (!is_field_safe(name, value) || is_framing_field(name)) return false;
  }
  if (!is_field_safe("Content-Type", answer.content_type)) return false;
  // The status line as Beast writes it: the request's version, the code, the reason phrase.
  out.append("HTTP/").push_back(static_cast<char>('0' + (version / 10) % 10));
  out.push_back('.');
  out.push_back(static_cast<char>('0' + version % 10));
  out.push_back(' ');
  std::array<char, 4> code{};
  std::to_chars(code.data(), code.data() + code.size(), answer.status);
  out.append(code.data(), 3).push_back(' ');
  out.append(http::obsolete_reason(status)).append("\r\n");
  if (!has_field(answer.headers, "Server")) append_field(out, "Server", "bankworker");
  if (!has_field(answer.headers, "Content-Type")) append_field(out, "Content-Type", answer.content_type);
  for (std::size_t i = 0; i < answer.headers.size(); ++i) {
    if (!is_replaced(answer.headers, i)) append_field(out, answer.headers[i].first, answer.headers[i].second);
  }
  if (!bodiless) {
    std::array<char, 24> length{};
    const auto end = std::to_chars(length.data(), length.data() + length.size(), answer.body.size()).ptr;
    append_field(out, "Content-Length", std::string_view(length.data(), static_cast<std::size_t>(end - length.data())));
  }
  // HTTP/1.1 keeps a connection alive unless told; HTTP/1.0 closes it unless told (RFC 9112 §9.3).
  if (version >= 11 && !keep_alive) append_field(out, "Connection", "close");
  if (version < 11 && keep_alive) append_field(out, "Connection", "keep-alive");
  out.append("\r\n");
  return true;
}

read_verdict judge_head_error(const beast::error_code& error) {
  if (error == beast::error::timeout) return {0, {}, &http_counters::header_timeouts};
  // A chunked body that arrived with its head and already ran past the limit.
  if (error == http::error::body_limit) return {413, "body larger than body_bytes_max", &http_counters::too_large};
  if (error == http::error::header_limit) {
    return {431, "request header fields too large (header_bytes_max)", &http_counters::bad_requests};
  }
  if (error != http::error::end_of_stream && error != asio::error::eof && error != asio::error::operation_aborted) {
    return {400, "malformed request", &http_counters::bad_requests};
  }
  return {};
}

read_verdict judge_head(const http_request_parser& parser, const http_settings& settings) {
  if (transfer_encoding_refused(parser.get())) {
    return {400, "Transfer-Encoding other than chunked", &http_counters::bad_requests};
  }
  // Refuse an oversized body from its declared length, before reading (or hashing) any of it.
  if (parser.content_length() && *parser.content_length() > settings.body_bytes_max) {
    return {413, "body larger than body_bytes_max", &http_counters::too_large};
  }
  return {};
}

read_verdict judge_body_error(const beast::error_code& error) {
  if (error == http::error::body_limit) return {413, "body larger than body_bytes_max", &http_counters::too_large};
  if (error != beast::error::timeout && error != asio::error::eof && error != http::error::partial_message) {
    return {400, "malformed request body", &http_counters::bad_requests};
  }
  return {};
}

http_request to_http_request(http_request_parser& parser, std::string remote_address) {
  auto& message = parser.get();
  http_request request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  request.path = request.target.substr(0, request.target.find('?'));
  request.body = std::move(message.body());
  request.remote_address = std::move(remote_address);
  for (const auto& field : message) {
    request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  return request;
}

route_choice choose_route(const std::vector<http_route>& routes, std::string_view method, std::string_view path) {
  route_choice choice;
  for (const http_route& r : routes) {
    const bool path_matches = r.prefix ? path.starts_with(r.path) : path == r.path;
    if (!path_matches) continue;
    if (r.method == method) {
      choice.route = &r;
      return choice;
    }
    if (!choice.allowed.empty()) choice.allowed += ", ";
    choice.allowed += r.method;
  }
  return choice;
}

struct http_server::state : std::enable_shared_from_this<state> {
  state(asio::io_context& io_, http_settings settings_, std::vector<http_route> routes_)
      : io(io_), settings(std::move(settings_)), routes(std::move(routes_)), acceptor(io_) {}

  asio::io_context& io;  // outlives the server (constructor contract)
  const http_settings settings;
  const std::vector<http_route> routes;
  tcp::acceptor acceptor;

  std::mutex mutex;  // guards everything below
  std::map<std::string, std::size_t> connections_by_address;
  std::size_t connections = 0;
  std::vector<std::weak_ptr<beast::tcp_stream>> streams;
  http_counters counters;
  bool stopping = false;

  // Releases a connection's slot however its coroutine ends.
  struct slot {
    std::shared_ptr<state> owner;
    std::string address;
    ~slot() {
      std::lock_guard lock(owner->mutex);
      --owner->connections;
      if (--owner->connections_by_address[address] == 0) owner->connections_by_address.erase(address);
    }
  };

  void count(std::uint64_t http_counters::*field) {
    std::lock_guard lock(mutex);
    ++(counters.*field);
  }

  // The route a method and path would go to, if any.
  const http_route* find_route(std::string_view method, std::string_view path) const {
    return choose_route(routes, method, path).route;
  }

  // A request refused for its size before any handler saw it is reported with the route it was
  // sent to, so that route's own metrics (webhook outcomes) see the refusal.
  void observe_too_large(const http::request_parser<http::string_body>& parser) const {
    if (!settings.observe_too_large) return;
    // The start line is parsed before the limit can fire; without one, method and target are
    // empty and no route matches.
    const auto& head = parser.get();
    const std::string_view target = head.target();
    settings.observe_too_large(find_route(head.method_string(), target.substr(0, target.find('?'))));
  }

  // Finds the handler for a request, or the 404/405 answer.
  asio::awaitable<http_response> route(http_request request) {
    const auto started = std::chrono::steady_clock::now();
    const auto observed = [&](const http_route* r, http_response response) {
      if (settings.observe) {
        settings.observe(r, response.status, std::chrono::duration_cast<std::chrono::microseconds>(
                                                 std::chrono::steady_clock::now() - started));
      }
      return response;
    };
    route_choice choice = choose_route(routes, request.method, request.path);
    if (choice.route != nullptr) {
      http_response answer;
      try {
        answer = co_await choice.route->handler(std::move(request));
      } catch (const std::exception&) {
        // The handler's own failure: the client learns nothing of it, the connection lives on.
        answer = plain(500, "internal error");
      }
      co_return observed(choice.route, std::move(answer));
    }
    if (choice.allowed.empty()) co_return observed(nullptr, plain(404, "not found"));
    http_response response = plain(405, "method not allowed");
    response.headers.emplace_back("Allow", std::move(choice.allowed));
    co_return observed(nullptr, std::move(response));
  }

  // Answers one canned response and closes: used for refusals before the request is read.
  static asio::awaitable<void> refuse(tcp::socket socket, std::chrono::milliseconds write_timeout) {
    beast::tcp_stream stream(std::move(socket));
    http::response<http::string_body> response{http::status::service_unavailable, 11};
    response.set(http::field::content_type, "text/plain; charset=utf-8");
    response.body() = "too many connections\n";
    response.keep_alive(false);
    response.prepare_payload();
    stream.expires_after(write_timeout);
    co_await http::async_write(stream, response, as_result);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // Writes `answer`: its head formatted into `head` (the connection's, reused), its body from
  // where it lies, in one gathered write.
  static asio::awaitable<void> write(beast::tcp_stream& stream, const http_response& answer, unsigned version,
                                     bool keep_alive, std::chrono::milliseconds timeout, std::string& head,
                                     beast::error_code& ec) {
    const http_response* sent = &answer;
    std::optional<http_response> refused;  // built only when needed: nothing allocated per response
    if (!format_response_head(answer, version, keep_alive, head)) {
      // A handler's field that could split the head (or that the server frames itself): never sent.
      sent = &refused.emplace(plain(500, "internal error"));
      format_response_head(*sent, version, keep_alive, head);
    }
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(head), asio::buffer(sent->body)};
    stream.expires_after(timeout);
    std::tie(ec, std::ignore) = co_await asio::async_write(stream, buffers, as_result);
  }

  // The lingering close after a refusal (see http_server.hpp): stop writing, then read and drop
  // what the client still sends until it closes, linger_timeout passes or linger_bytes_max is read.
  static asio::awaitable<void> linger(beast::tcp_stream& stream, const http_settings& s) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) co_return;
    const auto deadline = std::chrono::steady_clock::now() + s.linger_timeout;
    std::array<char, linger_read_bytes> dropped_bytes;
    std::size_t dropped = 0;
    while (dropped < s.linger_bytes_max) {
      stream.expires_at(deadline);
      auto [error, got] = co_await stream.async_read_some(asio::buffer(dropped_bytes), as_result);
      if (error) break;
      dropped += got;
    }
  }

  // Answers a request refused before any handler saw it, then closes with a lingering close.
  asio::awaitable<void> refuse_request(beast::tcp_stream& stream, const read_verdict& verdict, unsigned version,
                                       const http_request_parser& parser) {
    if (verdict.counted != nullptr) count(verdict.counted);
    if (verdict.counted == &http_counters::too_large) observe_too_large(parser);
    if (verdict.status == 0) co_return;  // the client left or timed out: nothing to answer
    beast::error_code ec;
    std::string head;
    co_await write(stream, plain(verdict.status, std::string(verdict.reason)), version, false, settings.write_timeout,
                   head, ec);
    if (!ec) co_await linger(stream, settings);
  }

  // Reads one whole request into `parser`; false (after answering any refusal) when the
  // connection is to close instead.
  asio::awaitable<bool> read_request(beast::tcp_stream& stream, beast::flat_buffer& buffer, http_request_parser& parser) {
    stream.expires_after(settings.header_timeout);
    auto [header_error, header_bytes] = co_await http::async_read_header(stream, buffer, parser, as_result);
    // Beast holds header_limit against what is left to parse after each read, not against the
    // whole head: with reads of connection_read_bytes, a head of 2,000 small fields (21 KB) that
    // ended in the read crossing the limit parsed whole. So the head's own size is held to it too.
    if (!header_error && header_bytes > settings.header_bytes_max) header_error = http::error::header_limit;
    if (header_error) {
      co_await refuse_request(stream, judge_head_error(header_error), 11, parser);
      co_return false;
    }
    const unsigned version = parser.get().version();
    if (const read_verdict verdict = judge_head(parser, settings); verdict.status != 0) {
      co_await refuse_request(stream, verdict, version, parser);
      co_return false;
    }
    if (parser.is_done()) co_return true;
    stream.expires_after(settings.body_timeout);
    auto [body_error, body_bytes] = co_await http::async_read(stream, buffer, parser, as_result);
    if (body_error) {
      co_await refuse_request(stream, judge_body_error(body_error), version, parser);
      co_return false;
    }
    co_return true;
  }

  static asio::awaitable<void> serve(std::shared_ptr<state> self, std::shared_ptr<beast::tcp_stream> stream,
                                     std::string address) {
    const slot held{self, address};
    const http_settings& s = self->settings;
    beast::flat_buffer buffer;
    buffer.reserve(connection_read_bytes);
    std::string head;  // each response's head, formatted here
    head.reserve(response_head_bytes);
    for (std::size_t served = 0; served < s.requests_per_connection_max; ++served) {
      http_request_parser parser;
      limit_request_parser(parser, s);
      if (!co_await self->read_request(*stream, buffer, parser)) break;

      const unsigned version = parser.get().version();
      const bool client_keep_alive = parser.get().keep_alive();
      http_request request = to_http_request(parser, address);
      self->count(&http_counters::requests);

      const http_response answer = co_await self->route(std::move(request));
      bool keep_alive = client_keep_alive;
      {
        std::lock_guard lock(self->mutex);
        keep_alive = keep_alive && !self->stopping;
      }
      beast::error_code write_error;
      co_await write(*stream, answer, version, keep_alive, s.write_timeout, head, write_error);
      if (write_error || !keep_alive) break;
    }
    beast::error_code ignored;
    stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<state> self) {
    for (;;) {
      auto [error, socket] = co_await self->acceptor.async_accept(asio::make_strand(self->io), as_result);
      if (error) {
        if (error == asio::error::operation_aborted || !self->acceptor.is_open()) co_return;
        if (error == asio::error::no_descriptors) {
          // Out of file descriptors: the pending connection stays queued and accept would fail
          // again at once, so pause instead of spinning a thread until a connection ends.
          asio::steady_timer pause(self->io, std::chrono::milliseconds(100));
          co_await pause.async_wait(as_result);
        }
        continue;  // a connection that died before accept, or a transient descriptor shortage
      }
      beast::error_code ec;
      const std::string address = socket.remote_endpoint(ec).address().to_string();
      if (ec) continue;
      bool admitted = false;
      std::shared_ptr<beast::tcp_stream> stream;
      {
        std::lock_guard lock(self->mutex);
        std::size_t& from_address = self->connections_by_address[address];
        if (!self->stopping && self->connections < self->settings.connections_max &&
            from_address < self->settings.connections_per_address_max) {
          ++from_address;
          ++self->connections;
          admitted = true;
          stream = std::make_shared<beast::tcp_stream>(std::move(socket));
          std::erase_if(self->streams, [](const auto& weak) { return weak.expired(); });
          self->streams.push_back(stream);
        } else {
          if (from_address == 0) self->connections_by_address.erase(address);
          ++self->counters.refused_connections;
        }
      }
      if (admitted) {
        const auto executor = stream->get_executor();
        asio::co_spawn(executor, serve(self, std::move(stream), address), asio::detached);
      } else {
        const auto executor = socket.get_executor();
        asio::co_spawn(executor, refuse(std::move(socket), self->settings.write_timeout), asio::detached);
      }
    }
  }
};

http_server::http_server(asio::io_context& io, http_settings settings, std::vector<http_route> routes)
    : state_(std::make_shared<state>(io, std::move(settings), std::move(routes))) {}

http_server::~http_server() { stop(); }

void http_server::start() {
  const auto& listen = state_->settings.listen;
  const auto address = asio::ip::make_address(listen.host == "localhost" ? "127.0.0.1" : listen.host);
  const tcp::endpoint endpoint(address, listen.port);
  state_->acceptor.open(endpoint.protocol());
  state_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  state_->acceptor.bind(endpoint);
  state_->acceptor.listen(asio::socket_base::max_listen_connections);
  port_ = state_->acceptor.local_endpoint().port();
  asio::co_spawn(state_->acceptor.get_executor(), state::accept_loop(state_), asio::detached);
}

void http_server::stop() {
  std::vector<std::shared_ptr<beast::tcp_stream>> open;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopping) return;
    state_->stopping = true;
    for (const auto& weak : state_->streams) {
      if (auto stream = weak.lock()) open.push_back(std::move(stream));
    }
  }
  asio::post(state_->acceptor.get_executor(), [self = state_] {
    beast::error_code ignored;
    self->acceptor.close(ignored);
  });
  // Idle connections wait in a read; cancelling it ends them. A request being handled finishes,
  // and its response says Connection: close.
  for (auto& stream : open) {
    asio::post(stream->get_executor(), [stream] {
      beast::error_code ignored;  // the connection may have closed itself meanwhile
      stream->socket().cancel(ignored);
    });
  }
}

http_counters http_server::counters() const {
  std::lock_guard lock(state_->mutex);
  return state_->counters;
}

}  // namespace bankworker::worker
