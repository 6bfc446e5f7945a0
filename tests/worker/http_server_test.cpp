// The HTTP server over real loopback sockets: routing, keep-alive, and every limit a hostile
// client could lean on.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>

#include <boost/asio/io_context.hpp>

#include "tests/support/raw_http.hpp"
#include "worker/http_request_path.hpp"
#include "worker/http_server.hpp"

using namespace bankworker::worker;
using namespace bankworker::service;
namespace asio = boost::asio;

namespace {

// A server on a free loopback port, run by two threads, stopped and joined at scope exit.
struct running_server {
  asio::io_context io;
  std::unique_ptr<http_server> server;
  std::vector<std::thread> threads;
  std::atomic<int> echo_calls{0};

  explicit running_server(http_settings settings) {
    settings.listen = {"127.0.0.1", 0};
    std::vector<http_route> routes;
    routes.push_back({"GET", "/healthz", false, [](http_request) -> asio::awaitable<http_response> {
                        co_return http_response{200, "text/plain", "ok\n", {}};
                      }});
    routes.push_back({"POST", "/echo", false, [this](http_request request) -> asio::awaitable<http_response> {
                        ++echo_calls;
                        co_return http_response{200, "text/plain",
                                                std::to_string(request.body.size()) + " " +
                                                    std::string(request.header("x-probe")),
                                                {}};
                      }});
    routes.push_back({"POST", "/webhooks/", true, [](http_request request) -> asio::awaitable<http_response> {
                        co_return http_response{202, "text/plain", request.path, {}};
                      }});
    // Puts the request's body into a response field, as a handler that copies what a client sent
    // (a redirect target, say) would: the response-splitting attack below.
    routes.push_back({"POST", "/reflect", false, [](http_request request) -> asio::awaitable<http_response> {
                        co_return http_response{200, "text/plain", "reflected\n", {{"X-Reflected", request.body}}};
                      }});
    routes.push_back({"POST", "/boom", false, [](http_request) -> asio::awaitable<http_response> {
                        throw std::runtime_error("handler failed");
                        co_return http_response{};
                      }});
    server = std::make_unique<http_server>(io, settings, std::move(routes));
    server->start();
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }
  ~running_server() {
    server->stop();
    io.stop();
    for (auto& thread : threads) thread.join();
  }
};

// A raw client socket (tests/support/raw_http.hpp): send bytes, read what comes back, see when
// the server closes.
struct client : bankworker::test::raw_connection {
  explicit client(std::uint16_t port) : raw_connection(port) { REQUIRE(connected()); }
};

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

http_settings small_limits() {
  http_settings settings;
  settings.body_bytes_max = 1024;
  settings.header_bytes_max = 2048;
  settings.header_timeout = std::chrono::milliseconds(300);
  settings.body_timeout = std::chrono::milliseconds(300);
  settings.connections_per_address_max = 4;
  return settings;
}

}  // namespace

TEST_CASE("requests are routed and a kept-alive connection serves several", "[http]") {
  running_server s(small_limits());
  client c(s.server->port());
  c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string first = c.read_response();
  CHECK(status_line(first) == "HTTP/1.1 200 OK");
  CHECK(first.ends_with("ok\n"));
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nX-Probe: hello\r\nContent-Length: 5\r\n\r\nabcde");
  const std::string second = c.read_response();
  CHECK(status_line(second) == "HTTP/1.1 200 OK");
  CHECK(second.ends_with("5 hello"));
  c.send("POST /webhooks/stripe/some-tenant HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  CHECK(c.read_response().ends_with("/webhooks/stripe/some-tenant"));
}

TEST_CASE("a response head has the status line, the server's fields and the handler's, as written", "[http]") {
  std::string head;
  http_response answer{202, "application/json", "{}", {}};
  REQUIRE(format_response_head(answer, 11, true, head));
  CHECK(head == "HTTP/1.1 202 Accepted\r\nServer: bankworker\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n");
  // Closing: HTTP/1.1 says so; HTTP/1.0 says so when it stays open instead.
  REQUIRE(format_response_head(answer, 11, false, head));
  CHECK(head.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"));
  REQUIRE(format_response_head(answer, 10, true, head));
  CHECK(head.starts_with("HTTP/1.0 202 Accepted\r\n"));
  CHECK(head.ends_with("Content-Length: 2\r\nConnection: keep-alive\r\n\r\n"));
  REQUIRE(format_response_head(answer, 10, false, head));
  CHECK(head.ends_with("Content-Length: 2\r\n\r\n"));

  // A handler's Content-Type or Server replaces the default; Set-Cookie repeats; any other field
  // set twice keeps its last value.
  answer = {303, "text/html", "", {{"content-type", "text/plain"}, {"Set-Cookie", "a=1"}, {"Location", "/one"},
                                   {"Set-Cookie", "b=2"}, {"Location", "/two"}}};
  REQUIRE(format_response_head(answer, 11, true, head));
  CHECK(head == "HTTP/1.1 303 See Other\r\nServer: bankworker\r\ncontent-type: text/plain\r\nSet-Cookie: a=1\r\n"
                "Set-Cookie: b=2\r\nLocation: /two\r\nContent-Length: 0\r\n\r\n");
  // No Content-Length where the status has no content.
  answer = {204, "text/plain", "", {}};
  REQUIRE(format_response_head(answer, 11, true, head));
  CHECK(head == "HTTP/1.1 204 No Content\r\nServer: bankworker\r\nContent-Type: text/plain\r\n\r\n");
}

TEST_CASE("a field that could split the response head is never written", "[http]") {
  std::string head;
  const auto refused = [&](std::vector<std::pair<std::string, std::string>> fields, std::string content_type = "x/y") {
    return !format_response_head(http_response{200, std::move(content_type), "", std::move(fields)}, 11, true, head);
  };
  CHECK(refused({{"X-A", "1\r\nSet-Cookie: evil=1"}}));
  CHECK(refused({{"X-A", "1\nSet-Cookie: evil=1"}}));
  CHECK(refused({{"X-A", std::string("1\0" "2", 3)}}));
  CHECK(refused({{"X-A: 1\r\nX-B", "2"}}));
  CHECK(refused({{"", "2"}}));
  CHECK(refused({}, "text/plain\r\nSet-Cookie: evil=1"));
  // The framing is the server's: a handler cannot set it.
  CHECK(refused({{"Content-Length", "0"}}));
  CHECK(refused({{"transfer-encoding", "chunked"}}));
  CHECK(refused({{"Connection", "keep-alive"}}));
  CHECK(!format_response_head(http_response{204, "x/y", "body", {}}, 11, true, head));
  CHECK_FALSE(refused({{"X-A", "a value with spaces, commas; and \"quotes\""}}));

  // Over the wire: the handler's reflected CR LF becomes a 500 whose head carries no injected field.
  running_server s(small_limits());
  client c(s.server->port());
  const std::string attack = "x\r\nSet-Cookie: session=attacker\r\n\r\n<script>";
  c.send("POST /reflect HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(attack.size()) + "\r\n\r\n" +
         attack);
  const std::string response = c.read_response();
  CHECK(status_line(response) == "HTTP/1.1 500 Internal Server Error");
  CHECK(response.find("Set-Cookie") == std::string::npos);
  CHECK(response.find("reflected") == std::string::npos);
  // The connection lives on, and a clean value is reflected as sent.
  c.send("POST /reflect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nplain");
  const std::string clean = c.read_response();
  CHECK(status_line(clean) == "HTTP/1.1 200 OK");
  CHECK(clean.find("X-Reflected: plain\r\n") != std::string::npos);
}

TEST_CASE("unknown paths are 404 and known paths with another method 405 with Allow", "[http]") {
  running_server s(small_limits());
  client c(s.server->port());
  c.send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_line(c.read_response()) == "HTTP/1.1 404 Not Found");
  c.send("DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string response = c.read_response();
  CHECK(status_line(response) == "HTTP/1.1 405 Method Not Allowed");
  CHECK(response.find("Allow: GET\r\n") != std::string::npos);
}

TEST_CASE("a body over the limit is refused with 413 before it is read or handled", "[http]") {
  // The route each refused body was sent to, as the server reports it for the route's metrics.
  auto refused_routes = std::make_shared<std::vector<std::string>>();
  auto refused_mutex = std::make_shared<std::mutex>();
  http_settings settings = small_limits();
  settings.observe_too_large = [refused_routes, refused_mutex](const http_route* route) {
    std::lock_guard lock(*refused_mutex);
    refused_routes->push_back(route != nullptr ? route->method + " " + route->path : "none");
  };
  running_server s(settings);
  SECTION("declared by Content-Length: answered without sending the body") {
    client c(s.server->port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n");
    const std::string response = c.read_response();
    CHECK(status_line(response) == "HTTP/1.1 413 Payload Too Large");
    CHECK(c.closed_within(1'000));
    CHECK(s.echo_calls == 0);
    CHECK(s.server->counters().too_large == 1);
    client prefixed(s.server->port());
    prefixed.send("POST /webhooks/stripe/t1?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n");
    CHECK(status_line(prefixed.read_response()) == "HTTP/1.1 413 Payload Too Large");
    std::lock_guard lock(*refused_mutex);
    CHECK(*refused_routes == std::vector<std::string>{"POST /echo", "POST /webhooks/"});
  }
  SECTION("chunked, growing past the limit, sent at once") {
    client c(s.server->port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + std::string(1024, 'a') +
           "\r\n1\r\nb\r\n0\r\n\r\n");
    CHECK(status_line(c.read_response()) == "HTTP/1.1 413 Payload Too Large");
    CHECK(s.echo_calls == 0);
  }
  SECTION("chunked, growing past the limit after the head was read") {
    client c(s.server->port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    c.send("400\r\n" + std::string(1024, 'a') + "\r\n1\r\nb\r\n0\r\n\r\n");
    CHECK(status_line(c.read_response()) == "HTTP/1.1 413 Payload Too Large");
    CHECK(s.echo_calls == 0);
  }
  SECTION("exactly at the limit is accepted") {
    client c(s.server->port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'a'));
    CHECK(status_line(c.read_response()) == "HTTP/1.1 200 OK");
    CHECK(s.echo_calls == 1);
    CHECK(s.server->counters().too_large == 0);
  }
}

TEST_CASE("a slow client is dropped at the header timeout", "[http]") {
  running_server s(small_limits());
  client c(s.server->port());
  const auto started = std::chrono::steady_clock::now();
  c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never finishes its head
  CHECK(c.closed_within(3'000));
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
  // The stream closes the socket when its timer fires, just before the server counts it.
  for (int i = 0; i < 100 && s.server->counters().header_timeouts == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.server->counters().header_timeouts == 1);
}

TEST_CASE("an idle kept-alive connection is closed at the header timeout", "[http]") {
  running_server s(small_limits());
  client c(s.server->port());
  c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_line(c.read_response()) == "HTTP/1.1 200 OK");
  CHECK(c.closed_within(3'000));
}

TEST_CASE("connections past the per-address cap are refused with 503 while others are served", "[http]") {
  running_server s(small_limits());
  std::vector<std::unique_ptr<client>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(std::make_unique<client>(s.server->port()));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  client extra(s.server->port());
  CHECK(status_line(extra.read_response()) == "HTTP/1.1 503 Service Unavailable");
  CHECK(s.server->counters().refused_connections == 1);
  idle.front()->send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_line(idle.front()->read_response()) == "HTTP/1.1 200 OK");
}

TEST_CASE("oversized headers, garbage and failing handlers get their status and the server lives on", "[http]") {
  running_server s(small_limits());
  {
    client c(s.server->port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n");
    CHECK(status_line(c.read_response()) == "HTTP/1.1 431 Request Header Fields Too Large");
  }
  {
    client c(s.server->port());
    c.send("THIS IS NOT HTTP\r\n\r\n");
    CHECK(status_line(c.read_response()) == "HTTP/1.1 400 Bad Request");
  }
  {
    client c(s.server->port());
    c.send("POST /boom HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    const std::string response = c.read_response();
    CHECK(status_line(response) == "HTTP/1.1 500 Internal Server Error");
    CHECK(response.find("handler failed") == std::string::npos);
  }
  client c(s.server->port());
  c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(status_line(c.read_response()) == "HTTP/1.1 200 OK");
}

TEST_CASE("routing picks the first route with the method; 405 lists the other methods of the path", "[http]") {
  const std::vector<http_route> routes = {{"GET", "/healthz", false, {}},
                                          {"POST", "/webhooks/stripe/", true, {}},
                                          {"PUT", "/healthz", false, {}},
                                          {"POST", "/webhooks/stripe", false, {}}};
  CHECK(choose_route(routes, "GET", "/healthz").route == &routes[0]);
  CHECK(choose_route(routes, "POST", "/webhooks/stripe/t1").route == &routes[1]);
  CHECK(choose_route(routes, "POST", "/webhooks/stripe").route == &routes[3]);
  const route_choice not_allowed = choose_route(routes, "DELETE", "/healthz");
  CHECK(not_allowed.route == nullptr);
  CHECK(not_allowed.allowed == "GET, PUT");
  const route_choice not_found = choose_route(routes, "GET", "/healthz/");
  CHECK(not_found.route == nullptr);
  CHECK(not_found.allowed.empty());
}

TEST_CASE("a failed read is answered by its cause, and a client that just left is not", "[http]") {
  namespace http = boost::beast::http;
  CHECK(judge_head_error(http::error::header_limit).status == 431);
  CHECK(judge_head_error(http::error::body_limit).status == 413);
  CHECK(judge_head_error(http::error::bad_method).status == 400);
  CHECK(judge_head_error(http::error::bad_method).counted == &http_counters::bad_requests);
  CHECK(judge_head_error(http::error::end_of_stream).status == 0);
  CHECK(judge_head_error(http::error::end_of_stream).counted == nullptr);
  CHECK(judge_head_error(boost::beast::error::timeout).counted == &http_counters::header_timeouts);
  CHECK(judge_body_error(http::error::body_limit).status == 413);
  CHECK(judge_body_error(http::error::partial_message).status == 0);
  CHECK(judge_body_error(boost::beast::error::timeout).counted == nullptr);
}

TEST_CASE("a Transfer-Encoding other than exactly chunked is 400, closes, and its body is never served", "[http]") {
  running_server s(small_limits());
  // The body of each attack is a whole second request: served, it would reach /echo.
  const std::string smuggled = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde";
  for (const std::string& head : {
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n"),
           std::string("POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"),
           std::string("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n")}) {
    INFO(head);
    client c(s.server->port());
    c.send(head + smuggled);
    const std::string response = c.read_response();
    CHECK(bankworker::test::status_of(response) == 400);
    CHECK(c.read_response(1'000).empty());  // no second response follows
    CHECK(c.closed_within(1'000));
    CHECK(s.echo_calls == 0);
  }
  // Exactly chunked (coding names are case-insensitive) is still read as one chunked body.
  client c(s.server->port());
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n");
  const std::string response = c.read_response();
  CHECK(status_line(response) == "HTTP/1.1 200 OK");
  CHECK(response.ends_with("5 "));
  CHECK(s.echo_calls == 1);
}

TEST_CASE("a 413 is delivered with a lingering close: a client still sending its body reads it", "[http]") {
  running_server s(small_limits());
  // Far more than the socket buffers hold, so the client is still sending when the 413 is written.
  const std::string body(16 << 20, 'a');
  client c(s.server->port());
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
  CHECK(c.send(body));  // the server drains instead of resetting the connection mid-body
  const std::string response = c.read_response();
  CHECK(status_line(response) == "HTTP/1.1 413 Payload Too Large");
  CHECK(c.closed_within(1'000));
  CHECK(s.echo_calls == 0);
}

TEST_CASE("a lingering close ends at linger_timeout however long the client keeps the connection", "[http]") {
  http_settings settings = small_limits();
  settings.linger_timeout = std::chrono::milliseconds(300);
  running_server s(settings);
  client c(s.server->port());
  const auto started = std::chrono::steady_clock::now();
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc");  // and then nothing
  CHECK(status_line(c.read_response()) == "HTTP/1.1 413 Payload Too Large");
  // The server's side is half closed at once; while it lingers it still reads (and drops) what is
  // sent. Once it has closed for good, a byte sent is answered with a reset and the next send fails.
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() - started < std::chrono::seconds(3)) {
    refused = !c.send("x");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(refused);
  const auto lingered = std::chrono::steady_clock::now() - started;
  CHECK(lingered >= std::chrono::milliseconds(300));
  CHECK(lingered < std::chrono::seconds(2));
}
