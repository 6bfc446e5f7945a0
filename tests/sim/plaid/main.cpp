// plaid_sim: a simulator of Plaid's HTTP API for tests, benchmarks and the demo.
//
//   plaid_sim [--port N] [--seed N] [--items N] [--transactions M] [--client-id ID] [--secret S]
//             [--threads N] [--public-token-ttl-s N] [--sync-limit-per-item N] [--sync-limit-per-client N]
//
// Listens on 127.0.0.1 only. With --port 0 (the default) it picks a free port; either way the
// first line on stdout is "listening on http://127.0.0.1:PORT". Credentials default to
// BANKWORKER_PLAID_CLIENT_ID / BANKWORKER_PLAID_SECRET, then to the built-in sandbox pair.
// SIGTERM or SIGINT: stop accepting, exit 0.
//
// All network code lives here (Beast is heavy to compile; the behaviour is in simulator.cpp).

#include <curl/curl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/sim/plaid/simulator.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace bankworker::sim::plaid {
namespace {

namespace server_limits {
// A client that sends nothing for this long (idle keep-alive included) is disconnected.
inline constexpr std::chrono::seconds read_timeout{30};
// Writing one answer (a 500-row page is about half a megabyte) on loopback.
inline constexpr std::chrono::seconds write_timeout{30};
inline constexpr std::size_t connections_max = 1024;
inline constexpr std::size_t threads_max = 16;
// Webhook deliveries waiting for the sender thread; past this, /sim/webhooks/send fails.
inline constexpr std::size_t webhook_queue_max = 64;
inline constexpr long webhook_timeout_ms = 10'000;
inline constexpr long webhook_connect_timeout_ms = 5'000;
inline constexpr std::size_t webhook_response_bytes_max = 64 << 10;
static_assert(webhook_connect_timeout_ms <= webhook_timeout_ms);
}  // namespace server_limits

struct server_settings {
  std::uint16_t port = 0;
  std::size_t threads = 1;
};

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------------------------
// Webhook delivery: libcurl's blocking easy API, on a thread of its own so no io_context thread
// ever blocks on a receiver.

std::size_t discard_body(char*, std::size_t size, std::size_t count, void* user) {
  auto& received = *static_cast<std::size_t*>(user);
  received += size * count;
  // Returning less than offered aborts the transfer: the receiver's answer is not ours to store.
  return received > server_limits::webhook_response_bytes_max ? 0 : size * count;
}

delivery_result post_webhook(const webhook_delivery& delivery) {
  delivery_result result;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    result.error = "curl_easy_init failed";
    return result;
  }
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Content-Type: application/json");
  const std::string verification = "Plaid-Verification: " + delivery.verification;
  headers = curl_slist_append(headers, verification.c_str());
  std::size_t received = 0;
  curl_easy_setopt(curl, CURLOPT_URL, delivery.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, delivery.body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(delivery.body.size()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, server_limits::webhook_timeout_ms);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, server_limits::webhook_connect_timeout_ms);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "Plaid Verifier");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &received);
  const CURLcode code = curl_easy_perform(curl);
  if (code == CURLE_OK) {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  } else {
    result.error = curl_easy_strerror(code);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return result;
}

class webhook_sender {
 public:
  using done_fn = std::function<void(delivery_result)>;

  webhook_sender() : thread_([this] { run(); }) {}
  ~webhook_sender() { stop(); }
  webhook_sender(const webhook_sender&) = delete;
  webhook_sender& operator=(const webhook_sender&) = delete;

  // False when the queue is full (webhook_queue_max) or the sender has stopped.
  bool enqueue(webhook_delivery delivery, done_fn done) {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= server_limits::webhook_queue_max) return false;
    queue_.emplace_back(std::move(delivery), std::move(done));
    ready_.notify_one();
    return true;
  }

  // Finishes the delivery in progress, drops the rest (their waiters are gone with the loop).
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      ready_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
    queue_.clear();
  }

 private:
  void run() {
    for (;;) {
      std::pair<webhook_delivery, done_fn> job;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job.second(post_webhook(job.first));
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::pair<webhook_delivery, done_fn>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// Awaitable delivery: the sender thread posts the result back to the awaiting coroutine's
// executor, so the coroutine resumes on its own strand.
template <class CompletionToken>
auto async_deliver(webhook_sender& sender, webhook_delivery delivery, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(delivery_result)>(
      [&sender](auto handler, webhook_delivery d) {
        using handler_type = decltype(handler);
        auto shared = std::make_shared<handler_type>(std::move(handler));
        const auto resume = [shared](delivery_result result) {
          auto executor = asio::get_associated_executor(*shared);
          asio::post(executor, [shared, result = std::move(result)]() mutable { (*shared)(std::move(result)); });
        };
        if (!sender.enqueue(std::move(d), resume)) {
          resume(delivery_result{0, "webhook queue full (webhook_queue_max)"});
        }
      },
      token, std::move(delivery));
}

// ---------------------------------------------------------------------------------------------
// HTTP server: one coroutine per connection.

std::string_view path_of(std::string_view target) {
  const std::size_t query = target.find('?');
  return query == std::string_view::npos ? target : target.substr(0, query);
}

// `sim`, `sender` and `connections` outlive the io_context (they live in main), so references
// to them are safe in these coroutines; everything else is taken by value.
asio::awaitable<void> serve_connection(beast::tcp_stream stream, simulator& sim, webhook_sender& sender,
                                       std::atomic<std::size_t>& connections) {
  beast::flat_buffer buffer;
  beast::error_code ec;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(limits::request_header_bytes_max);
    parser.body_limit(limits::request_body_bytes_max);
    stream.expires_after(server_limits::read_timeout);
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::body_limit) {
      http::response<http::string_body> too_large{http::status::payload_too_large, 11};
      too_large.set(http::field::content_type, "application/json");
      too_large.body() = R"({"error_code":"INVALID_BODY","error_type":"INVALID_REQUEST","error_message":"body larger than request_body_bytes_max","display_message":null})";
      too_large.keep_alive(false);
      too_large.prepare_payload();
      stream.expires_after(server_limits::write_timeout);
      co_await http::async_write(stream, too_large, asio::redirect_error(asio::use_awaitable, ec));
      break;
    }
    if (ec) break;  // closed, timed out (read_timeout) or not HTTP: nothing to answer
    const http::request<http::string_body>& request = parser.get();

    const request_view view{path_of(request.target()), request.body(), request["PLAID-CLIENT-ID"],
                            request["PLAID-SECRET"], request["Plaid-Verification"]};
    outcome result = sim.handle(view, now_s());
    reply answer;
    if (result.webhook) {
      const delivery_result delivery = co_await async_deliver(sender, *result.webhook, asio::use_awaitable);
      answer = sim.delivered(*result.webhook, delivery);
    } else {
      answer = std::move(result.response);
    }
    if (answer.delay.count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, answer.delay);
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    const auto status = static_cast<http::status>(answer.status);
    if (answer.shape == reply_shape::truncated) {
      // Promise the whole body, send half, hang up: what a connection cut mid-response looks like.
      std::string raw = "HTTP/1.1 " + std::to_string(answer.status) + " " + std::string(http::obsolete_reason(status)) +
                        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(answer.body.size()) +
                        "\r\nConnection: close\r\n\r\n";
      raw.append(answer.body, 0, answer.body.size() / 2);
      stream.expires_after(server_limits::write_timeout);
      co_await asio::async_write(stream, asio::buffer(raw), asio::redirect_error(asio::use_awaitable, ec));
      break;
    }
    http::response<http::string_body> response{status, request.version()};
    response.set(http::field::server, "plaid-sim");
    response.set(http::field::content_type, "application/json; charset=utf-8");
    response.keep_alive(request.keep_alive());
    response.body() = std::move(answer.body);
    response.prepare_payload();
    stream.expires_after(server_limits::write_timeout);
    co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !response.keep_alive()) break;
  }
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  --connections;
}

asio::awaitable<void> accept_connections(tcp::acceptor& acceptor, simulator& sim, webhook_sender& sender,
                                         std::atomic<std::size_t>& connections) {
  // `acceptor` lives in main and outlives the io_context, like the other references.
  for (;;) {
    beast::error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(asio::make_strand(acceptor.get_executor()),
                                                        asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors, say: pause rather than spin.
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections.load() >= server_limits::connections_max) {
      socket.close(ec);  // over connections_max: refuse rather than queue without bound
      continue;
    }
    ++connections;
    auto executor = socket.get_executor();
    asio::co_spawn(executor, serve_connection(beast::tcp_stream(std::move(socket)), sim, sender, connections),
                   asio::detached);
  }
}

// ---------------------------------------------------------------------------------------------
// Command line.

[[noreturn]] void usage(const std::string& reason) {
  std::cerr << "plaid_sim: " << reason
            << "\nusage: plaid_sim [--port N] [--seed N] [--items N] [--transactions M] [--client-id ID] [--secret S]"
               " [--threads N] [--public-token-ttl-s N] [--sync-limit-per-item N] [--sync-limit-per-client N]\n";
  std::exit(2);
}

std::uint64_t number_arg(const std::string& flag, const std::string& text, std::uint64_t max) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value > max) {
    usage(flag + " wants a whole number up to " + std::to_string(max));
  }
  return value;
}

int run(int argc, char** argv) {
  simulator_settings settings;
  server_settings server;
  if (const char* id = std::getenv("BANKWORKER_PLAID_CLIENT_ID"); id != nullptr && *id != '\0') settings.client_id = id;
  if (const char* secret = std::getenv("BANKWORKER_PLAID_SECRET"); secret != nullptr && *secret != '\0') settings.secret = secret;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--port") server.port = static_cast<std::uint16_t>(number_arg(flag, value, 65535));
    else if (flag == "--seed") settings.seed = number_arg(flag, value, UINT64_MAX);
    else if (flag == "--items") settings.items_initial = number_arg(flag, value, limits::items_max);
    else if (flag == "--transactions") settings.transactions_per_item = number_arg(flag, value, limits::transactions_per_call_max);
    else if (flag == "--client-id") settings.client_id = value;
    else if (flag == "--secret") settings.secret = value;
    else if (flag == "--threads") server.threads = number_arg(flag, value, server_limits::threads_max);
    else if (flag == "--public-token-ttl-s") settings.public_token_ttl = std::chrono::seconds(number_arg(flag, value, 86'400));
    else if (flag == "--sync-limit-per-item") {
      settings.sync_calls_per_item_per_min = static_cast<std::uint32_t>(number_arg(flag, value, limits::sync_calls_per_min_max));
    } else if (flag == "--sync-limit-per-client") {
      settings.sync_calls_per_client_per_min = static_cast<std::uint32_t>(number_arg(flag, value, limits::sync_calls_per_min_max));
    } else usage("unknown option " + flag);
  }
  if (server.threads == 0) usage("--threads must be at least 1");
  if (settings.items_initial * settings.transactions_per_item > limits::transactions_total_max) {
    usage("--items × --transactions exceeds transactions_total_max");
  }

  simulator sim(settings, now_s());
  webhook_sender sender;
  std::atomic<std::size_t> connections{0};
  asio::io_context io(static_cast<int>(server.threads));
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port));
  std::cout << "listening on http://127.0.0.1:" << acceptor.local_endpoint().port() << std::endl;

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const beast::error_code&, int) {
    beast::error_code ignored;
    acceptor.close(ignored);
    io.stop();
  });
  asio::co_spawn(io, accept_connections(acceptor, sim, sender, connections), asio::detached);

  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < server.threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& thread : threads) thread.join();
  sender.stop();
  return 0;
}

}  // namespace
}  // namespace bankworker::sim::plaid

int main(int argc, char** argv) {
  // Before any thread: curl_global_init is not thread-safe.
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::cerr << "plaid_sim: curl_global_init failed\n";
    return 1;
  }
  int status = 1;
  try {
    status = bankworker::sim::plaid::run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "plaid_sim: " << error.what() << "\n";
    status = 1;
  }
  curl_global_cleanup();
  return status;
}
