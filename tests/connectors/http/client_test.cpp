// The outbound HTTP client against a real loopback server (Boost.Beast, in this process, on the
// same io_context): real sockets, real libcurl, nothing mocked.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <atomic>
#include <list>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "connectors/http/client.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = bankworker::connectors::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using bankworker::crypto::secret;

// A loopback HTTP/1.1 server with a route for each behaviour under test. It counts the TCP
// connections it accepted, so connection reuse is visible.
class test_server {
 public:
  explicit test_server(asio::io_context& io) : io_(io), acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io, accept_loop(), asio::detached);
  }

  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + std::string(path);
  }
  int connections() const { return connections_; }
  int requests() const { return requests_; }

 private:
  asio::awaitable<void> accept_loop() {
    while (true) {
      tcp::socket& socket = sockets_.emplace_back(io_);
      co_await acceptor_.async_accept(socket, asio::use_awaitable);
      ++connections_;
      asio::co_spawn(io_, serve(socket), asio::detached);
    }
  }

  // `socket` lives in sockets_, which outlives the io_context's run.
  asio::awaitable<void> serve(tcp::socket& socket) {
    beast::flat_buffer buffer;
    while (true) {
      beast::http::request<beast::http::string_body> request;
      co_await beast::http::async_read(socket, buffer, request, asio::use_awaitable);
      ++requests_;
      const std::string target(request.target());
      beast::http::response<beast::http::string_body> response{beast::http::status::ok, request.version()};
      response.keep_alive(request.keep_alive());
      if (target == "/echo") {
        response.set("X-Seen-Header", request["X-Test"]);
        response.set("Retry-After", "7");
        response.body() = std::string(request.method_string()) + " " + request.body();
      } else if (target.starts_with("/delay/")) {
        asio::steady_timer timer(io_, std::chrono::milliseconds(std::stoi(target.substr(7))));
        co_await timer.async_wait(asio::use_awaitable);
        response.body() = "late";
      } else if (target.starts_with("/big/")) {
        response.body() = std::string(std::stoul(target.substr(5)), 'x');
      } else if (target.starts_with("/big_chunked/")) {
        response.body() = std::string(std::stoul(target.substr(13)), 'x');
        response.chunked(true);
      } else if (target == "/truncated") {
        // Promises 100 bytes, sends 10, closes.
        const std::string raw = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
        co_await asio::async_write(socket, asio::buffer(raw), asio::use_awaitable);
        socket.close();
        co_return;
      } else if (target == "/token") {
        response.body() = R"({"access_token":"access-sandbox-0f2b6f1e-4a1c-4e0e-9a6b-3c2d1e0f9a8b"})";
      } else {
        response.result(beast::http::status::not_found);
      }
      if (!response.chunked()) response.prepare_payload();
      co_await beast::http::async_write(socket, response, asio::use_awaitable);
      if (!response.keep_alive()) co_return;
    }
  }

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  std::list<tcp::socket> sockets_;
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
};

// Runs the tasks on `io` (this thread, plus `extra_threads`) until all finished; rethrows the
// first failure.
void run_all(asio::io_context& io, std::vector<asio::awaitable<void>> tasks, int extra_threads = 0) {
  std::atomic<std::size_t> left{tasks.size()};
  std::mutex mutex;
  std::exception_ptr first;
  for (auto& task : tasks) {
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr error) {
      if (error) {
        std::lock_guard lock(mutex);
        if (!first) first = error;
      }
      if (--left == 0) io.stop();
    });
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < extra_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& thread : threads) thread.join();
  if (first) std::rethrow_exception(first);
}

void run_one(asio::io_context& io, asio::awaitable<void> task) {
  std::vector<asio::awaitable<void>> tasks;
  tasks.push_back(std::move(task));
  run_all(io, std::move(tasks));
}

http::client_settings quick_settings() {
  http::client_settings settings;
  settings.request_timeout = 5'000ms;
  settings.connect_timeout = 2'000ms;
  settings.response_bytes_max = 1'000;
  return settings;
}

// What most tests need, in destruction order: the client before the server before the io_context.
struct fixture {
  explicit fixture(http::client_settings settings = quick_settings()) : server(io), client(io, std::move(settings)) {}
  asio::io_context io;
  test_server server;
  http::client client;
};

http::request post(std::string url, std::string_view body) {
  http::request call;
  call.method = "POST";
  call.url = std::move(url);
  call.body = secret::copy_of(body);
  return call;
}

http::request get(std::string url) {
  http::request call;
  call.method = "GET";
  call.url = std::move(url);
  return call;
}

}  // namespace

TEST_CASE("a POST carries its body and headers and the response comes back whole", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    http::request call = post(f.server.url("/echo"), "{\"hello\":1}");
    call.headers.emplace_back("X-Test", "value-1");
    call.headers.emplace_back("Content-Type", "application/json");
    const http::response response = co_await f.client.perform(std::move(call));
    REQUIRE(response.error == http::failure::none);
    CHECK(response.status == 200);
    CHECK(response.body == "POST {\"hello\":1}");
    CHECK(response.retry_after == "7");
    CHECK(response.bytes_sent == 11);
    CHECK(response.bytes_received == response.body.size());
    CHECK(response.latency.count() > 0);
    CHECK(response.secret_body.empty());
    // The length was announced, so the body came with room for a parser's padding.
    CHECK(response.body.capacity() >= response.body.size() + http::body_padding_bytes);
  }(f));
}

TEST_CASE("a GET sends no body", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    const http::response response = co_await f.client.perform(get(f.server.url("/echo")));
    REQUIRE(response.error == http::failure::none);
    CHECK(response.body == "GET ");
    CHECK(response.bytes_sent == 0);
    const http::response missing = co_await f.client.perform(get(f.server.url("/nowhere")));
    CHECK(missing.error == http::failure::none);
    CHECK(missing.status == 404);
  }(f));
}

TEST_CASE("a server slower than the deadline gives timeout", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    http::request call = post(f.server.url("/delay/3000"), "x");
    call.timeout = 200ms;
    const auto started = std::chrono::steady_clock::now();
    const http::response response = co_await f.client.perform(std::move(call));
    CHECK(response.error == http::failure::timeout);
    CHECK(response.status == 0);
    CHECK_FALSE(response.error_text.empty());
    CHECK(std::chrono::steady_clock::now() - started < 2s);
  }(f));
}

TEST_CASE("a body over the cap gives too_large, whether its length is announced or not", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    const http::response exact = co_await f.client.perform(get(f.server.url("/big/1000")));
    CHECK(exact.error == http::failure::none);
    CHECK(exact.body.size() == 1000);
    const http::response announced = co_await f.client.perform(get(f.server.url("/big/5000")));
    CHECK(announced.error == http::failure::too_large);
    CHECK(announced.body.empty());
    const http::response chunked = co_await f.client.perform(get(f.server.url("/big_chunked/5000")));
    CHECK(chunked.error == http::failure::too_large);
    CHECK(chunked.body.empty());
  }(f));
}

TEST_CASE("a request body over request_bytes_max is not sent", "[http]") {
  http::client_settings settings = quick_settings();
  settings.request_bytes_max = 16;
  fixture f(settings);
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    const http::response response = co_await f.client.perform(post(f.server.url("/echo"), std::string(17, 'a')));
    CHECK(response.error == http::failure::too_large);
    CHECK(f.server.connections() == 0);
  }(f));
}

TEST_CASE("URLs that are not https or loopback http are refused without a connection", "[http]") {
  fixture f;
  const std::string port = f.server.url("").substr(std::string("http://127.0.0.1:").size());
  const std::vector<std::string> refused = {
      "http://10.0.0.1:" + port + "/echo", "http://localhost:" + port + "/echo", "ftp://127.0.0.1:" + port + "/",
      "garbage", "", "http://127.0.0.1.example.com/", "http://127.1:" + port + "/", "http://user:pw@127.0.0.1:" + port + "/",
      "https://", "http://127.0.0.1:" + port + "/echo with space", "http://[::2]:" + port + "/", "file:///etc/passwd",
      "http://127.0.0.256/"};
  run_one(f.io, [](fixture& f, std::vector<std::string> refused) -> asio::awaitable<void> {
    for (const std::string& url : refused) {
      INFO(url);
      CHECK_FALSE(http::client::url_allowed(url));
      const http::response response = co_await f.client.perform(get(url));
      CHECK(response.error == http::failure::refused_url);
    }
    CHECK(f.server.connections() == 0);
  }(f, refused));
  CHECK(http::client::url_allowed("https://production.plaid.com/transactions/sync"));
  CHECK(http::client::url_allowed("HTTPS://example.com:8443"));
  CHECK(http::client::url_allowed("http://127.0.0.1:8080/x"));
  CHECK(http::client::url_allowed("http://127.1.2.3/"));
  CHECK(http::client::url_allowed("http://[::1]:9000/sim"));
}

TEST_CASE("a refused connection gives connect", "[http]") {
  asio::io_context io;
  std::string url;
  {
    tcp::acceptor closed(io, {asio::ip::make_address("127.0.0.1"), 0});
    url = "http://127.0.0.1:" + std::to_string(closed.local_endpoint().port()) + "/";
  }
  http::client client(io, quick_settings());
  run_one(io, [](http::client& client, std::string url) -> asio::awaitable<void> {
    const http::response response = co_await client.perform(get(std::move(url)));
    CHECK(response.error == http::failure::connect);
  }(client, url));
}

TEST_CASE("a response cut short of its Content-Length gives transfer", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    const http::response response = co_await f.client.perform(get(f.server.url("/truncated")));
    CHECK(response.error == http::failure::transfer);
    CHECK(response.body.empty());
  }(f));
}

TEST_CASE("200 concurrent calls on one thread all complete over a bounded number of connections", "[http]") {
  http::client_settings settings = quick_settings();
  settings.connections_per_host_max = 8;
  settings.calls_in_flight_max = 64;
  fixture f(settings);
  constexpr int calls = 200;
  int answered = 0;
  std::vector<asio::awaitable<void>> tasks;
  for (int i = 0; i < calls; ++i) {
    tasks.push_back([](http::client& client, std::string url, int i, int& answered) -> asio::awaitable<void> {
      const http::response response = co_await client.perform(post(std::move(url), std::to_string(i)));
      REQUIRE(response.error == http::failure::none);
      CHECK(response.body == "POST " + std::to_string(i));
      ++answered;
    }(f.client, f.server.url("/echo"), i, answered));
  }
  run_all(f.io, std::move(tasks));
  CHECK(answered == calls);
  CHECK(f.server.requests() == calls);
  CHECK(f.server.connections() <= 8);
}

TEST_CASE("calls from an io_context run by four threads all complete", "[http]") {
  fixture f;
  std::atomic<int> answered{0};
  std::vector<asio::awaitable<void>> tasks;
  for (int i = 0; i < 100; ++i) {
    tasks.push_back([](http::client& client, std::string url, int i, std::atomic<int>& answered) -> asio::awaitable<void> {
      const http::response response = co_await client.perform(post(std::move(url), std::to_string(i)));
      if (response.error == http::failure::none && response.body == "POST " + std::to_string(i)) ++answered;
    }(f.client, f.server.url("/echo"), i, answered));
  }
  run_all(f.io, std::move(tasks), 3);
  CHECK(answered == 100);
}

TEST_CASE("sequential calls to one host reuse the connection", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    for (int i = 0; i < 20; ++i) {
      const http::response response = co_await f.client.perform(post(f.server.url("/echo"), "again"));
      REQUIRE(response.status == 200);
    }
  }(f));
  CHECK(f.server.requests() == 20);
  CHECK(f.server.connections() == 1);
}

TEST_CASE("a sensitive response lands in guarded memory and never in body", "[http]") {
  fixture f;
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    http::request call = post(f.server.url("/token"), "{}");
    call.sensitive_response = true;
    const http::response response = co_await f.client.perform(std::move(call));
    REQUIRE(response.error == http::failure::none);
    CHECK(response.body.empty());
    CHECK(response.secret_body.reveal() ==
          std::string_view(R"({"access_token":"access-sandbox-0f2b6f1e-4a1c-4e0e-9a6b-3c2d1e0f9a8b"})"));
    CHECK(response.bytes_received == response.secret_body.size());
  }(f));
}

TEST_CASE("a sensitive response over its cap gives too_large", "[http]") {
  http::client_settings settings = quick_settings();
  settings.response_bytes_max = 1 << 20;
  fixture f(settings);
  run_one(f.io, [](fixture& f) -> asio::awaitable<void> {
    http::request call = get(f.server.url("/big_chunked/" + std::to_string(http::sensitive_response_bytes_max + 1)));
    call.sensitive_response = true;
    const http::response response = co_await f.client.perform(std::move(call));
    CHECK(response.error == http::failure::too_large);
    CHECK(response.secret_body.empty());
  }(f));
}

TEST_CASE("shutdown completes calls in flight as cancelled and refuses new ones", "[http]") {
  asio::io_context io;
  test_server server(io);
  http::client client(io, quick_settings());
  int cancelled = 0;
  std::vector<asio::awaitable<void>> tasks;
  for (int i = 0; i < 5; ++i) {
    tasks.push_back([](http::client& client, std::string url, int& cancelled) -> asio::awaitable<void> {
      const http::response response = co_await client.perform(get(std::move(url)));
      CHECK(response.error == http::failure::cancelled);
      ++cancelled;
    }(client, server.url("/delay/3000"), cancelled));
  }
  tasks.push_back([](asio::io_context& io, http::client& client, std::string url) -> asio::awaitable<void> {
    asio::steady_timer timer(io, 200ms);
    co_await timer.async_wait(asio::use_awaitable);
    client.shutdown();
    client.shutdown();
    const http::response late = co_await client.perform(get(std::move(url)));
    CHECK(late.error == http::failure::cancelled);
  }(io, client, server.url("/echo")));
  const auto started = std::chrono::steady_clock::now();
  run_all(io, std::move(tasks));
  CHECK(cancelled == 5);
  CHECK(std::chrono::steady_clock::now() - started < 2s);
}

TEST_CASE("a client destroyed with calls in flight after its io_context stopped frees everything", "[http]") {
  asio::io_context io;
  test_server server(io);
  {
    http::client client(io, quick_settings());
    for (int i = 0; i < 3; ++i) {
      asio::co_spawn(io, [](http::client& client, std::string url) -> asio::awaitable<void> {
        co_await client.perform(get(std::move(url)));
      }(client, server.url("/delay/3000")), asio::detached);
    }
    asio::steady_timer timer(io, 200ms);
    timer.async_wait([&](boost::system::error_code) { io.stop(); });
    io.run();
    CHECK(server.requests() == 3);
  }
  // Leak and use-after-free checks are ASan's; here the io_context is destroyed with the calls'
  // coroutines still suspended.
}
