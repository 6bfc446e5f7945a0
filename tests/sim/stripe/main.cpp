// stripe_sim: a small Stripe for tests, the demo and benchmarks, on loopback.
//
//   stripe_sim [--port N] [--seed N] [--api-key sk_test_…]
//
// Prints "listening on http://127.0.0.1:PORT" once ready. Serves what bankworker calls
// (GET /v1/balance_transactions/{id}, GET /v1/events?starting_after=…|ending_before=…&limit=…
// (limit 1–100, default 10), Bearer auth with the API key (401 otherwise) and an optional
// Stripe-Account header naming the connected account whose objects are read) and a control API
// for tests:
//   POST /sim/trigger {"kind":"payment|refund|payout|payout_failed|dispute|application_fee|thin_payment|thin_unknown","amount":2000,
//                      "currency":"usd","settlement_currency":"gbp","account":"acct_…",
//                      "arrival_date":1700179200,"statement_descriptor":"ACME" (payouts; default: now, null),
//                      "mode":"valid|duplicate|reorder|stale|forged","secret":"whsec_…",
//                      "deliver_to":"http://127.0.0.1:8080/webhooks/stripe/<tenant>"}
//     → {"events":[…],"statuses":[…]} once every delivery was answered (deliver_to may be empty:
//        the events are only recorded, for the missed-event recovery to find);
//   GET /sim/events → {"ids":[…]} every event id, oldest first;
//   POST /sim/fail {"path":"/v1/balance_transactions","status":429,"count":1,"retry_after":"1"}
//     → the next `count` API calls whose path starts with `path` answer `status` (with
//        Retry-After when given) and a Stripe error object;
//   GET /sim/api_calls → {"balance_transactions":N,"events":M,"objects":K} API calls answered 200
//     so far (objects: GETs of what thin events' related_object.url names);
// and GET of any /v1/… or /v2/… object path an event named (/v1/payment_intents/pi_…,
// /v1/charges/ch_…, /v1/refunds/re_…, /v1/payouts/po_…, /v1/disputes/dp_…,
// /v1/application_fees/fee_…, /v1/billing/meters/mtr_…). Every leg that moves the balance (charge,
// refund, dispute withdrawal, payout and its failure, application fee) has a balance transaction
// shaped as Stripe's OpenAPI fixture, in the charge's settlement currency for refunds and disputes
// (the made-up rate 0.8 when it differs from the presentment currency).

#include <curl/curl.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <simdjson.h>

#include "tests/sim/stripe/simulator.hpp"
#include "worker/http_server.hpp"

namespace asio = boost::asio;
using namespace bankworker;
using sim::stripe::delivery;

namespace {

constexpr long delivery_timeout_ms = 10'000;
constexpr std::size_t events_page_max = 100;

// Sends deliveries with libcurl on its own thread (never on an io_context thread) and wakes the
// waiting handler through its timer when a batch is done.
class sender {
 public:
  struct batch {
    std::string url;
    std::vector<delivery> deliveries;
    std::vector<long> statuses;
    std::shared_ptr<asio::steady_timer> done;
  };

  sender() : thread_([this] { run(); }) {}
  ~sender() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void submit(std::shared_ptr<batch> b) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(b));
    }
    wake_.notify_one();
  }

 private:
  static std::size_t discard(char*, std::size_t size, std::size_t count, void*) { return size * count; }

  void run() {
    CURL* curl = curl_easy_init();
    for (;;) {
      std::shared_ptr<batch> b;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) break;
        b = std::move(queue_.front());
        queue_.pop_front();
      }
      for (const delivery& d : b->deliveries) {
        curl_easy_reset(curl);
        curl_slist* headers = nullptr;
        headers = curl_slist_append(headers, "Content-Type: application/json; charset=utf-8");
        headers = curl_slist_append(headers, ("Stripe-Signature: " + d.signature_header).c_str());
        headers = curl_slist_append(headers, "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)");
        curl_easy_setopt(curl, CURLOPT_URL, b->url.c_str());
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, d.body.data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(d.body.size()));
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, delivery_timeout_ms);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
        long status = 0;
        if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        b->statuses.push_back(status);
        curl_slist_free_all(headers);
      }
      asio::post(b->done->get_executor(), [done = b->done] { done->cancel(); });
    }
    curl_easy_cleanup(curl);
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<batch>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

worker::http_response json_response(unsigned status, std::string body) {
  return worker::http_response{status, "application/json", std::move(body), {}};
}

worker::http_response stripe_error(unsigned status, std::string_view type, std::string_view message) {
  return json_response(status, "{\"error\":{\"type\":\"" + std::string(type) + "\",\"message\":\"" +
                                   std::string(message) + "\"}}");
}

std::string query_value(std::string_view target, std::string_view name) {
  const std::size_t query = target.find('?');
  if (query == std::string_view::npos) return {};
  std::string_view rest = target.substr(query + 1);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    if (pair.starts_with(name) && pair.size() > name.size() && pair[name.size()] == '=') {
      return std::string(pair.substr(name.size() + 1));
    }
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return {};
}

// Injected API failures (POST /sim/fail) and counts of answered calls; handlers run on two threads.
class api_faults {
 public:
  struct fault {
    std::string path;
    unsigned status = 500;
    std::int64_t count = 0;
    std::string retry_after;
  };
  void add(fault f) {
    std::lock_guard lock(mutex_);
    faults_.push_back(std::move(f));
  }
  // The failure to answer `path` with, if one is armed (and uses it up).
  std::optional<worker::http_response> take(std::string_view path) {
    std::lock_guard lock(mutex_);
    for (fault& f : faults_) {
      if (f.count <= 0 || !path.starts_with(f.path)) continue;
      --f.count;
      const std::string type = f.status == 429 ? "rate_limit_error" : f.status >= 500 ? "api_error" : "invalid_request_error";
      worker::http_response out{f.status, "application/json",
                                "{\"error\":{\"type\":\"" + type + "\",\"message\":\"injected by /sim/fail\"}}", {}};
      if (!f.retry_after.empty()) out.headers.emplace_back("Retry-After", f.retry_after);
      return out;
    }
    return std::nullopt;
  }
  void count(std::string_view what) {
    std::lock_guard lock(mutex_);
    ++answered_[std::string(what)];
  }
  std::string counts() {
    std::lock_guard lock(mutex_);
    return "{\"balance_transactions\":" + std::to_string(answered_["balance_transactions"]) +
           ",\"events\":" + std::to_string(answered_["events"]) +
           ",\"objects\":" + std::to_string(answered_["objects"]) + "}";
  }

 private:
  std::mutex mutex_;
  std::vector<fault> faults_;
  std::map<std::string, std::int64_t> answered_;
};

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t port = 0;
  std::uint64_t seed = 1;
  std::string api_key = "sk_test_bankworker_sim";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--port") port = static_cast<std::uint16_t>(std::strtoul(argv[i + 1], nullptr, 10));
    else if (flag == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--api-key") api_key = argv[i + 1];
    else {
      std::fprintf(stderr, "stripe_sim: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  sim::stripe::simulator stripe(seed);
  sender outbox;

  const auto authorised = [api_key](const worker::http_request& request) {
    return request.header("authorization") == "Bearer " + api_key;
  };

  std::vector<worker::http_route> routes;
  api_faults faults;
  routes.push_back({"GET", "/v1/balance_transactions/", true,
                    [&stripe, &faults, authorised](worker::http_request request) -> asio::awaitable<worker::http_response> {
                      if (!authorised(request)) co_return stripe_error(401, "invalid_request_error", "Invalid API Key provided");
                      if (auto injected = faults.take(request.path)) co_return *injected;
                      const std::string id = request.path.substr(std::string_view("/v1/balance_transactions/").size());
                      if (auto json = stripe.balance_transaction(id, request.header("stripe-account"))) {
                        faults.count("balance_transactions");
                        co_return json_response(200, *json);
                      }
                      co_return stripe_error(404, "invalid_request_error", "No such balance transaction");
                    }});
  routes.push_back({"GET", "/v1/events", false,
                    [&stripe, &faults, authorised](worker::http_request request) -> asio::awaitable<worker::http_response> {
                      if (!authorised(request)) co_return stripe_error(401, "invalid_request_error", "Invalid API Key provided");
                      if (auto injected = faults.take(request.path)) co_return *injected;
                      std::size_t limit = 10;
                      if (const std::string text = query_value(request.target, "limit"); !text.empty()) {
                        limit = std::strtoul(text.c_str(), nullptr, 10);
                        if (limit < 1 || limit > events_page_max) {
                          co_return stripe_error(400, "invalid_request_error", "limit must be between 1 and 100");
                        }
                      }
                      const std::string after = query_value(request.target, "starting_after");
                      const std::string before = query_value(request.target, "ending_before");
                      if (!after.empty() && !before.empty()) {
                        co_return stripe_error(400, "invalid_request_error", "starting_after and ending_before are exclusive");
                      }
                      auto json = stripe.list_events(request.header("stripe-account"), after, before, limit);
                      if (!json) co_return stripe_error(404, "invalid_request_error", "No such event");
                      faults.count("events");
                      co_return json_response(200, std::move(*json));
                    }});
  // Objects thin events name; after the specific /v1 routes, which the server tries first.
  for (const char* prefix : {"/v1/", "/v2/"}) {
    routes.push_back({"GET", prefix, true,
                      [&stripe, &faults, authorised](worker::http_request request) -> asio::awaitable<worker::http_response> {
                        if (!authorised(request)) co_return stripe_error(401, "invalid_request_error", "Invalid API Key provided");
                        if (auto injected = faults.take(request.path)) co_return *injected;
                        if (auto json = stripe.object_at(request.path, request.header("stripe-account"))) {
                          faults.count("objects");
                          co_return json_response(200, *json);
                        }
                        co_return stripe_error(404, "invalid_request_error", "No such object");
                      }});
  }
  routes.push_back({"POST", "/sim/fail", false, [&faults](worker::http_request request) -> asio::awaitable<worker::http_response> {
                      simdjson::dom::parser parser;
                      simdjson::dom::element doc;
                      if (parser.parse(request.body).get(doc) != simdjson::SUCCESS) {
                        co_return stripe_error(400, "invalid_request_error", "body is not JSON");
                      }
                      api_faults::fault f;
                      std::string_view text;
                      std::int64_t number = 0;
                      if (doc["path"].get(text) == simdjson::SUCCESS) f.path = std::string(text);
                      if (doc["status"].get(number) == simdjson::SUCCESS) f.status = static_cast<unsigned>(number);
                      if (doc["count"].get(number) == simdjson::SUCCESS) f.count = number;
                      if (doc["retry_after"].get(text) == simdjson::SUCCESS) f.retry_after = std::string(text);
                      faults.add(std::move(f));
                      co_return json_response(200, "{}");
                    }});
  routes.push_back({"GET", "/sim/api_calls", false, [&faults](worker::http_request) -> asio::awaitable<worker::http_response> {
                      co_return json_response(200, faults.counts());
                    }});
  routes.push_back({"GET", "/sim/events", false, [&stripe](worker::http_request) -> asio::awaitable<worker::http_response> {
                      std::string json = "{\"ids\":[";
                      bool first = true;
                      for (const auto& id : stripe.event_ids()) {
                        json += (first ? "\"" : ",\"") + id + "\"";
                        first = false;
                      }
                      co_return json_response(200, json + "]}");
                    }});
  routes.push_back({"POST", "/sim/trigger", false,
                    [&stripe, &outbox](worker::http_request request) -> asio::awaitable<worker::http_response> {
                      simdjson::dom::parser parser;
                      simdjson::dom::element doc;
                      if (parser.parse(request.body).get(doc) != simdjson::SUCCESS) {
                        co_return stripe_error(400, "invalid_request_error", "body is not JSON");
                      }
                      sim::stripe::scenario s;
                      std::string mode_text = "valid", secret, url;
                      std::string_view text;
                      std::int64_t number = 0;
                      if (doc["kind"].get(text) == simdjson::SUCCESS) s.kind = std::string(text);
                      if (doc["amount"].get(number) == simdjson::SUCCESS) s.amount = number;
                      if (doc["fee"].get(number) == simdjson::SUCCESS) s.fee = number;
                      if (doc["currency"].get(text) == simdjson::SUCCESS) s.currency = std::string(text);
                      if (doc["settlement_currency"].get(text) == simdjson::SUCCESS) s.settlement_currency = std::string(text);
                      if (doc["account"].get(text) == simdjson::SUCCESS) s.account = std::string(text);
                      if (doc["charge"].get(text) == simdjson::SUCCESS) s.charge_id = std::string(text);
                      if (doc["arrival_date"].get(number) == simdjson::SUCCESS) s.arrival_date_s = number;
                      if (doc["statement_descriptor"].get(text) == simdjson::SUCCESS) {
                        s.statement_descriptor = std::string(text);
                      }
                      if (doc["mode"].get(text) == simdjson::SUCCESS) mode_text = std::string(text);
                      if (doc["secret"].get(text) == simdjson::SUCCESS) secret = std::string(text);
                      if (doc["deliver_to"].get(text) == simdjson::SUCCESS) url = std::string(text);
                      const auto mode = sim::stripe::parse_delivery_mode(mode_text);
                      if (!mode) co_return stripe_error(400, "invalid_request_error", "unknown mode");
                      const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                                           std::chrono::system_clock::now().time_since_epoch()).count();
                      auto b = std::make_shared<sender::batch>();
                      b->url = url;
                      b->deliveries = stripe.trigger(s, *mode, secret, now);
                      if (b->deliveries.empty()) co_return stripe_error(400, "invalid_request_error", "unknown kind");
                      std::string events = "[";
                      for (std::size_t i = 0; i < b->deliveries.size(); ++i) {
                        events += (i ? ",\"" : "\"") + b->deliveries[i].event_id + "\"";
                      }
                      events += "]";
                      std::string statuses = "[";
                      if (!url.empty()) {
                        b->done = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor,
                                                                       std::chrono::steady_clock::time_point::max());
                        outbox.submit(b);
                        co_await b->done->async_wait(asio::as_tuple(asio::use_awaitable));
                        for (std::size_t i = 0; i < b->statuses.size(); ++i) {
                          statuses += (i ? "," : "") + std::to_string(b->statuses[i]);
                        }
                      }
                      co_return json_response(200, "{\"events\":" + events + ",\"statuses\":" + statuses + "]}");
                    }});

  asio::io_context io;
  worker::http_settings settings;
  settings.listen = {"127.0.0.1", port};
  settings.header_timeout = std::chrono::seconds(30);
  settings.body_timeout = std::chrono::seconds(60);
  worker::http_server server(io, settings, std::move(routes));
  server.start();
  std::printf("listening on http://127.0.0.1:%u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int) {
    server.stop();
    io.stop();
  });
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back([&] { io.run(); });
  for (auto& thread : threads) thread.join();
  curl_global_cleanup();
  return 0;
}
