#include "connectors/stripe/api_client.hpp"

#include <algorithm>

#include "connectors/stripe/thin_event.hpp"
#include "crypto/redact.hpp"

namespace bankworker::stripe {

namespace {

namespace http = connectors::http;

constexpr std::size_t error_message_bytes_max = 512;
constexpr std::size_t error_field_bytes_max = 128;
// A Retry-After beyond an hour is treated as an hour: the queue's own backoff caps it anyway.
constexpr std::int64_t retry_after_s_max = 3'600;

// Stripe ids (evt_…, txn_…, acct_…) are letters, digits and underscores. Anything else is refused
// before it reaches a URL path, a query or a header, so no input can change what is requested.
bool is_stripe_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > stripe_id_bytes_max) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::string kept_message(std::string_view text, std::uint32_t& redactions) {
  if (text.size() > error_message_bytes_max) text = text.substr(0, error_message_bytes_max);
  std::string out;
  redactions += static_cast<std::uint32_t>(crypto::redact_into(text, out));
  return out;
}

api_error_class class_of_status(long status) noexcept {
  if (status == 429) return api_error_class::rate_limited;
  if (status >= 500) return api_error_class::transient;
  if (status == 401 || status == 403) return api_error_class::credentials;
  if (status == 404) return api_error_class::not_found;
  if (status >= 200 && status < 300) return api_error_class::response_invalid;
  return api_error_class::permanent;
}

api_error classify_counted(long status, std::string_view body, std::string_view retry_after, std::uint32_t& redactions) {
  api_error out;
  out.kind = class_of_status(status);
  out.http_status = status;
  out.retry_after = http::retry_after_delay(retry_after, std::chrono::seconds(retry_after_s_max));
  // Stripe's error object: {"error":{"type":…,"code":…,"message":…}}. A body that is not one
  // (a proxy's HTML page) keeps the class from the status alone.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element document;
  simdjson::dom::object error;
  if (parser.parse(body.data(), body.size()).get(document) == simdjson::SUCCESS &&
      document["error"].get(error) == simdjson::SUCCESS) {
    std::string_view text;
    if (error["type"].get(text) == simdjson::SUCCESS) out.type = std::string(text.substr(0, error_field_bytes_max));
    if (error["code"].get(text) == simdjson::SUCCESS) out.code = std::string(text.substr(0, error_field_bytes_max));
    if (error["message"].get(text) == simdjson::SUCCESS) out.message = kept_message(text, redactions);
  }
  if (out.message.empty()) out.message = "HTTP " + std::to_string(status);
  return out;
}

api_error failure_of_transport(const http::response& response, std::uint32_t& redactions) {
  api_error out;
  out.kind = http::failure_is_permanent(response.error) ? api_error_class::refused : api_error_class::transient;
  out.message = kept_message(response.error_text, redactions);
  return out;
}

struct exchange {
  http::response response;
  api_call_record record;
  std::optional<api_error> failure;
};

// One GET. `http` outlives the client, which outlives the call (api_client.hpp).
boost::asio::awaitable<exchange> call_stripe(http::client& http, const api_settings& settings, std::string endpoint,
                                             std::string path_and_query, api_credentials credentials) {
  exchange out;
  out.record.endpoint = std::move(endpoint);
  if (credentials.key == nullptr || credentials.key->empty()) {
    out.failure = api_error{};
    out.failure->kind = api_error_class::credentials;
    out.failure->message = "no Stripe API key";
    co_return out;
  }
  if (credentials.account && !is_stripe_id(*credentials.account)) {
    out.failure = api_error{};
    out.failure->kind = api_error_class::permanent;
    out.failure->message = "connected account id is not a Stripe id";
    co_return out;
  }
  http::request request;
  request.method = "GET";
  request.url = settings.base_url + path_and_query;
  request.headers.emplace_back("Stripe-Version", settings.stripe_version);
  if (credentials.account) request.headers.emplace_back("Stripe-Account", *credentials.account);
  request.bearer_token = crypto::secret::copy_of(credentials.key->reveal().text());
  request.timeout = settings.request_timeout;
  // Named, not a temporary inside the co_await (GCC 12 may destroy those twice).
  auto performing = http.perform(std::move(request));
  out.response = co_await std::move(performing);
  const http::response& response = out.response;
  out.record = http::call_record_of(std::move(out.record.endpoint), response);
  if (response.error != http::failure::none) {
    out.failure = failure_of_transport(response, out.record.redactions);
  } else if (response.status < 200 || response.status >= 300) {
    out.failure = classify_counted(response.status, response.body, response.retry_after, out.record.redactions);
  }
  if (out.failure) {
    out.failure->http_status = response.status;
    out.record.error_code = out.failure->code;
  }
  co_return out;
}

template <class T>
api_result<T> failed(exchange& done) {
  api_result<T> out;
  out.failure = std::move(*done.failure);
  out.call = std::move(done.record);
  return out;
}

template <class T>
api_result<T> invalid(exchange& done, std::string_view reason) {
  api_result<T> out;
  out.failure.kind = api_error_class::response_invalid;
  out.failure.http_status = done.response.status;
  out.failure.message = kept_message(reason, done.record.redactions);
  out.call = std::move(done.record);
  return out;
}

template <class T>
api_result<T> refused_input(std::string endpoint, std::string_view reason) {
  api_result<T> out;
  out.failure.kind = api_error_class::permanent;
  out.failure.message = std::string(reason);
  out.call.endpoint = std::move(endpoint);
  return out;
}

}  // namespace

std::string_view to_string(api_error_class value) noexcept {
  switch (value) {
    case api_error_class::rate_limited: return "rate_limited";
    case api_error_class::transient: return "transient";
    case api_error_class::credentials: return "credentials";
    case api_error_class::not_found: return "not_found";
    case api_error_class::permanent: return "permanent";
    case api_error_class::response_invalid: return "response_invalid";
    case api_error_class::refused: return "refused";
  }
  return "unknown";
}

api_error classify_api_error(long http_status, std::string_view body, std::string_view retry_after) {
  std::uint32_t redactions = 0;
  return classify_counted(http_status, body, retry_after, redactions);
}

std::optional<events_page> parse_events_page(simdjson::dom::parser& parser, std::string_view json, std::string& error) {
  simdjson::dom::element document;
  if (const auto code = parser.parse(json.data(), json.size()).get(document); code) {
    error = std::string("malformed JSON: ") + simdjson::error_message(code);
    return std::nullopt;
  }
  simdjson::dom::array data;
  bool has_more = false;
  if (document["data"].get(data) != simdjson::SUCCESS) {
    error = "list.data is missing";
    return std::nullopt;
  }
  if (document["has_more"].get(has_more) != simdjson::SUCCESS) {
    error = "list.has_more is missing";
    return std::nullopt;
  }
  events_page page;
  page.has_more = has_more;
  for (simdjson::dom::element item : data) {
    if (page.events.size() >= events_page_limit_max) {
      error = "list.data holds more than events_page_limit_max events";
      return std::nullopt;
    }
    listed_event event;
    std::string_view text;
    if (item["id"].get(text) != simdjson::SUCCESS || !is_stripe_id(text)) {
      error = "event.id is missing or not a Stripe id";
      return std::nullopt;
    }
    event.id = std::string(text);
    if (item["type"].get(text) != simdjson::SUCCESS || text.empty() || text.size() > stripe_id_bytes_max) {
      error = "event " + event.id + ": type is missing";
      return std::nullopt;
    }
    event.type = std::string(text);
    if (item["created"].get(event.created_s) != simdjson::SUCCESS) {
      error = "event " + event.id + ": created is missing";
      return std::nullopt;
    }
    bool livemode = false;
    if (item["livemode"].get(livemode) == simdjson::SUCCESS) event.livemode = livemode;
    if (item["account"].get(text) == simdjson::SUCCESS && !text.empty()) event.account = std::string(text);
    event.body = simdjson::minify(item);
    if (event.body.size() > event_bytes_max) {
      error = "event " + event.id + " is larger than event_bytes_max";
      return std::nullopt;
    }
    page.events.push_back(std::move(event));
  }
  return page;
}

api_client::api_client(connectors::http::client& http, api_settings settings)
    : http_(http), settings_(std::move(settings)) {}

boost::asio::awaitable<api_result<balance_transaction>> api_client::get_balance_transaction(
    api_credentials credentials, std::string id) const {
  const std::string endpoint = "/v1/balance_transactions";
  if (!is_stripe_id(id)) co_return refused_input<balance_transaction>(endpoint, "balance transaction id is not a Stripe id");
  exchange done = co_await call_stripe(http_, settings_, endpoint, endpoint + "/" + id, std::move(credentials));
  if (done.failure) co_return failed<balance_transaction>(done);
  thread_local simdjson::dom::parser parser;
  std::string error;
  std::optional<balance_transaction> bt = parse_balance_transaction(parser, done.response.body, error);
  if (!bt) co_return invalid<balance_transaction>(done, error);
  if (bt->id != id) co_return invalid<balance_transaction>(done, "balance transaction answered with another id");
  api_result<balance_transaction> out;
  out.value = std::move(*bt);
  out.call = std::move(done.record);
  co_return out;
}

boost::asio::awaitable<api_result<events_page>> api_client::list_events(api_credentials credentials,
                                                                        events_query query) const {
  const std::string endpoint = "/v1/events";
  if (query.starting_after && query.ending_before) {
    co_return refused_input<events_page>(endpoint, "starting_after and ending_before are exclusive");
  }
  if (query.limit == 0 || query.limit > events_page_limit_max) {
    co_return refused_input<events_page>(endpoint, "limit outside 1…events_page_limit_max");
  }
  std::string target = endpoint + "?limit=" + std::to_string(query.limit);
  for (const auto& [name, value] : {std::pair{"starting_after", &query.starting_after},
                                    std::pair{"ending_before", &query.ending_before}}) {
    if (!*value) continue;
    if (!is_stripe_id(**value)) co_return refused_input<events_page>(endpoint, "event cursor is not a Stripe id");
    target += std::string("&") + name + "=" + **value;
  }
  exchange done = co_await call_stripe(http_, settings_, endpoint, target, std::move(credentials));
  if (done.failure) co_return failed<events_page>(done);
  thread_local simdjson::dom::parser parser;
  std::string error;
  std::optional<events_page> page = parse_events_page(parser, done.response.body, error);
  if (!page) co_return invalid<events_page>(done, error);
  api_result<events_page> out;
  out.value = std::move(*page);
  out.call = std::move(done.record);
  co_return out;
}

boost::asio::awaitable<api_result<std::string>> api_client::get_object(api_credentials credentials, std::string path,
                                                                        std::string expected_id,
                                                                        std::string expected_type) const {
  // The call log names the collection, not the object (as for balance transactions), in at most
  // endpoint_bytes_max bytes (the external-call log's column holds 256).
  constexpr std::size_t endpoint_bytes_max = 128;
  const std::size_t last_slash = path.rfind('/');
  const std::string endpoint =
      (last_slash == std::string::npos || last_slash == 0 ? path : path.substr(0, last_slash)).substr(0, endpoint_bytes_max);
  if (!is_relative_api_path(path)) {
    co_return refused_input<std::string>("(refused related_object.url)",
                                         "related_object.url is not a relative /v1/ or /v2/ object path");
  }
  exchange done = co_await call_stripe(http_, settings_, endpoint, path, std::move(credentials));
  if (done.failure) co_return failed<std::string>(done);
  if (done.response.body.size() > event_bytes_max) co_return invalid<std::string>(done, "object larger than event_bytes_max");
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element object;
  std::string_view id;
  std::string_view type;
  if (parser.parse(done.response.body.data(), done.response.body.size()).get(object) != simdjson::SUCCESS ||
      object.type() != simdjson::dom::element_type::OBJECT) {
    co_return invalid<std::string>(done, "object is not a JSON object");
  }
  if (object["id"].get(id) != simdjson::SUCCESS || id != expected_id) {
    co_return invalid<std::string>(done, "object answered with another id");
  }
  if (object["object"].get(type) != simdjson::SUCCESS || type != expected_type) {
    co_return invalid<std::string>(done, "object is not of the related object's type");
  }
  api_result<std::string> out;
  out.value = std::move(done.response.body);
  out.call = std::move(done.record);
  co_return out;
}

}  // namespace bankworker::stripe
