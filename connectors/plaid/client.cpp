#include "connectors/plaid/client.hpp"

#include <simdjson.h>

#include <array>
#include <cstring>
#include <initializer_list>
#include <span>
#include <vector>

#include "core/assert.hpp"
#include "core/json_text.hpp"
#include "crypto/redact.hpp"

namespace bankworker::plaid {

namespace {

namespace http = connectors::http;

using simdjson::ondemand::json_type;

// A Retry-After beyond a day is treated as a day: the queue's own backoff caps it anyway.
constexpr std::int64_t retry_after_s_max = 86'400;

// One member of a request body. `quoted` values are JSON-escaped strings; others are written as
// they are (numbers we produced ourselves).
struct json_member {
  json_member(std::string_view member_name, std::string_view member_value, bool is_string = true)
      : name(member_name), value(member_value), quoted(is_string) {}
  std::string_view name;
  std::string_view value;
  bool quoted;
};

// Builds `{"name":value,…}` straight into guarded memory: the body carries client_id, secret
// and usually the access token, so it never exists in an ordinary std::string.
crypto::secret json_body(std::initializer_list<json_member> members) {
  std::size_t bytes = 2 + (members.size() > 0 ? members.size() - 1 : 0);
  for (const json_member& member : members) {
    bytes += core::json_string_bytes(member.name) + 1;
    bytes += member.quoted ? core::json_string_bytes(member.value) : member.value.size();
  }
  return crypto::secret::filled(bytes, [&](unsigned char* out) {
    char* const begin = reinterpret_cast<char*>(out);
    char* at = begin;
    *at++ = '{';
    bool first = true;
    for (const json_member& member : members) {
      if (!first) *at++ = ',';
      first = false;
      at = core::write_json_string(member.name, at);
      *at++ = ':';
      if (member.quoted) {
        at = core::write_json_string(member.value, at);
      } else {
        std::memcpy(at, member.value.data(), member.value.size());
        at += member.value.size();
      }
    }
    *at++ = '}';
    BW_ASSERT(static_cast<std::size_t>(at - begin) == bytes);
    return true;
  });
}


// What the client keeps of one exchange with Plaid before the endpoint reads the body.
struct exchange {
  http::response response;
  call_record record;
  std::optional<error> failure;
};

error failure_of_transport(const http::response& response, std::uint32_t& redactions) {
  error out;
  out.kind = http::failure_is_permanent(response.error) ? error_class::refused : error_class::transient;
  out.message = kept_error_message(response.error_text, redactions);
  return out;
}

// One POST to Plaid. `http` outlives the client, which outlives the call (client.hpp).
// `known` points at the API secret and the call's access token, which outlive the call.
boost::asio::awaitable<exchange> call_plaid(http::client& http, const client_settings& settings, std::string endpoint,
                                            crypto::secret body, bool sensitive,
                                            std::vector<const crypto::secret*> known) {
  http::request request;
  request.method = "POST";
  request.url = settings.base_url + endpoint;
  request.headers.emplace_back("Content-Type", "application/json");
  request.headers.emplace_back("Plaid-Version", settings.plaid_version);
  request.body = std::move(body);
  request.timeout = settings.request_timeout;
  request.sensitive_response = sensitive;
  exchange out;
  // Named, not a temporary inside the co_await (GCC 12 may destroy those twice).
  auto performing = http.perform(std::move(request));
  out.response = co_await std::move(performing);
  const http::response& response = out.response;
  out.record = http::call_record_of(endpoint, response);
  if (response.error != http::failure::none) {
    out.failure = failure_of_transport(response, out.record.redactions);
  } else if (response.status < 200 || response.status >= 300) {
    if (sensitive) {
      const crypto::secret::view text = response.secret_body.reveal();
      out.failure = classify_error(response.status, text.text(), out.record.redactions, known);
    } else {
      out.failure = classify_error(response.status, response.body, out.record.redactions, known);
    }
    out.failure->retry_after = http::retry_after_delay(response.retry_after, std::chrono::seconds(retry_after_s_max));
  }
  if (out.failure) {
    out.failure->http_status = response.status;
    out.record.error_code = out.failure->error_code;
  }
  co_return out;
}

template <class T>
result<T> failed(exchange& done) {
  result<T> out;
  out.failure = std::move(*done.failure);
  out.call = std::move(done.record);
  return out;
}

// A 2xx whose body does not hold what the endpoint promises.
template <class T>
result<T> invalid(exchange& done, std::string_view reason) {
  result<T> out;
  out.failure.kind = error_class::response_invalid;
  out.failure.http_status = done.response.status;
  out.failure.message = kept_error_message(reason, done.record.redactions);
  out.call = std::move(done.record);
  return out;
}

template <class T>
result<T> succeeded(exchange& done, T value) {
  result<T> out;
  out.value = std::move(value);
  out.call = std::move(done.record);
  return out;
}

std::string_view trim_right(std::string_view text) {
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\r' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

// Reads /item/public_token/exchange's answer from guarded memory: the access token is taken from
// the raw input bytes (never unescaped into the parser's heap buffers) straight into a new secret.
struct exchange_read {
  std::optional<exchange_result> value;
  std::string error;
};

exchange_read read_exchange(const crypto::secret& body) {
  exchange_read out;
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: a padded copy, still guarded.
  const crypto::secret padded = crypto::secret::filled(body.size() + simdjson::SIMDJSON_PADDING, [&](unsigned char* to) {
    const crypto::secret::view from = body.reveal();
    std::memcpy(to, from.data(), from.size());
    std::memset(to + from.size(), 0, simdjson::SIMDJSON_PADDING);
    return true;
  });
  const crypto::secret::view text = padded.reveal();
  simdjson::ondemand::parser parser;
  try {
    simdjson::ondemand::document document =
        parser.iterate(text.text().data(), body.size(), body.size() + simdjson::SIMDJSON_PADDING);
    exchange_result result;
    bool seen_token = false;
    for (auto field : document.get_object()) {
      const std::string_view key = field.unescaped_key();
      simdjson::ondemand::value value = field.value();
      if (key == "access_token") {
        if (value.type() != json_type::string) {
          out.error = "access_token: expected a string";
          return out;
        }
        const std::string_view raw = trim_right(value.raw_json_token());
        if (raw.size() < 3 || raw.front() != '"' || raw.back() != '"') {
          out.error = "access_token: empty";
          return out;
        }
        const std::string_view token = raw.substr(1, raw.size() - 2);
        // Plaid's tokens are plain ASCII; an escape would have to be decoded outside guarded memory.
        if (token.find('\\') != std::string_view::npos) {
          out.error = "access_token: escaped characters";
          return out;
        }
        result.access_token = crypto::secret::copy_of(token);
        seen_token = true;
      } else if (key == "item_id") {
        if (value.type() != json_type::string) {
          out.error = "item_id: expected a string";
          return out;
        }
        const std::string_view item_id = value.get_string();
        if (item_id.empty() || item_id.size() > plaid_id_bytes_max) {
          out.error = "item_id: empty or longer than plaid_id_bytes_max";
          return out;
        }
        result.item_id = std::string(item_id);
      }
    }
    if (!seen_token) {
      out.error = "access_token: missing";
      return out;
    }
    if (result.item_id.empty()) {
      out.error = "item_id: missing";
      return out;
    }
    out.value = std::move(result);
  } catch (const simdjson::simdjson_error& error) {
    out.error = std::string("malformed JSON: ") + simdjson::error_message(error.error());
  }
  return out;
}

struct key_read {
  std::optional<verification_key> value;
  std::string error;
};

key_read read_verification_key(std::string_view body) {
  key_read out;
  simdjson::ondemand::parser parser;
  try {
    const simdjson::padded_string padded(body);
    simdjson::ondemand::document document = parser.iterate(padded);
    verification_key key;
    bool seen_key = false, seen_created = false;
    std::string kty, crv, alg;
    for (auto field : document.get_object()) {
      const std::string_view field_name = field.unescaped_key();
      if (field_name != "key") continue;
      seen_key = true;
      for (auto member : field.value().get_object()) {
        const std::string_view name = member.unescaped_key();
        simdjson::ondemand::value value = member.value();
        if (name == "kid") {
          key.kid = short_error_field(value.get_string());
        } else if (name == "x") {
          key.x = short_error_field(value.get_string());
        } else if (name == "y") {
          key.y = short_error_field(value.get_string());
        } else if (name == "kty") {
          kty = short_error_field(value.get_string());
        } else if (name == "crv") {
          crv = short_error_field(value.get_string());
        } else if (name == "alg") {
          alg = short_error_field(value.get_string());
        } else if (name == "created_at") {
          key.created_at = value.get_int64();
          seen_created = true;
        } else if (name == "expired_at") {
          if (!value.is_null()) key.expired_at = value.get_int64();
        }
      }
    }
    if (!seen_key) {
      out.error = "key: missing";
    } else if (key.kid.empty() || key.x.empty() || key.y.empty() || !seen_created) {
      out.error = "key: kid, x, y or created_at missing";
    } else if (kty != "EC" || crv != "P-256" || alg != "ES256") {
      out.error = "key: not an ES256 P-256 EC key";
    } else {
      out.value = std::move(key);
    }
  } catch (const simdjson::simdjson_error& error) {
    out.error = std::string("malformed JSON: ") + simdjson::error_message(error.error());
  }
  return out;
}

// Whether `body` is a JSON object at all (for answers we only acknowledge).
std::string json_object_problem(std::string_view body) {
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(body);
  simdjson::dom::element root;
  if (const auto code = parser.parse(padded).get(root); code != simdjson::SUCCESS) {
    return std::string("malformed JSON: ") + simdjson::error_message(code);
  }
  if (!root.is_object()) return "expected a JSON object";
  return {};
}

}  // namespace

client::client(connectors::http::client& http, const core::currency_table& currencies, client_settings settings,
               crypto::secret client_id, crypto::secret api_secret)
    : http_(http),
      currencies_(currencies),
      settings_(std::move(settings)),
      client_id_(std::move(client_id)),
      api_secret_(std::make_shared<const crypto::secret>(std::move(api_secret))) {}

void client::replace_secret(crypto::secret api_secret) {
  auto replacement = std::make_shared<const crypto::secret>(std::move(api_secret));
  const std::lock_guard lock(secret_mutex_);
  api_secret_.swap(replacement);
  // The old secret is zeroed when the last request holding it finishes (its shared_ptr).
}

std::shared_ptr<const crypto::secret> client::current_secret() const {
  const std::lock_guard lock(secret_mutex_);
  return api_secret_;
}

boost::asio::awaitable<result<exchange_result>> client::exchange_public_token(std::string public_token) const {
  // Held for the whole request: a SIGHUP that replaces the secret meanwhile does not touch it.
  const std::shared_ptr<const crypto::secret> api = current_secret();
  crypto::secret body = [&] {
    const crypto::secret::view id = client_id_.reveal();
    const crypto::secret::view secret = api->reveal();
    return json_body({{"client_id", id.text()}, {"secret", secret.text()}, {"public_token", public_token}});
  }();
  auto calling = call_plaid(http_, settings_, "/item/public_token/exchange", std::move(body), true, {api.get()});
  exchange done = co_await std::move(calling);
  if (done.failure) co_return failed<exchange_result>(done);
  exchange_read read = read_exchange(done.response.secret_body);
  if (!read.value) co_return invalid<exchange_result>(done, read.error);
  co_return succeeded(done, std::move(*read.value));
}

boost::asio::awaitable<result<accounts_result>> client::get_accounts(const crypto::secret& access_token) const {
  // Held for the whole request: a SIGHUP that replaces the secret meanwhile does not touch it.
  const std::shared_ptr<const crypto::secret> api = current_secret();
  crypto::secret body = [&] {
    const crypto::secret::view id = client_id_.reveal();
    const crypto::secret::view secret = api->reveal();
    const crypto::secret::view token = access_token.reveal();
    return json_body({{"client_id", id.text()}, {"secret", secret.text()}, {"access_token", token.text()}});
  }();
  auto calling = call_plaid(http_, settings_, "/accounts/get", std::move(body), false, {api.get(), &access_token});
  exchange done = co_await std::move(calling);
  if (done.failure) co_return failed<accounts_result>(done);
  simdjson::ondemand::parser parser;
  accounts_page_result read = parse_accounts_page(parser, done.response.body, currencies_);
  if (!read.ok) co_return invalid<accounts_result>(done, read.error);
  co_return succeeded(done, std::move(read.page));
}

boost::asio::awaitable<result<sync_page>> client::sync_transactions(const crypto::secret& access_token,
                                                                    std::string cursor,
                                                                    simdjson::ondemand::parser& parser) const {
  // Held for the whole request: a SIGHUP that replaces the secret meanwhile does not touch it.
  const std::shared_ptr<const crypto::secret> api = current_secret();
  const std::string count = std::to_string(settings_.sync_count);
  crypto::secret body = [&] {
    const crypto::secret::view id = client_id_.reveal();
    const crypto::secret::view secret = api->reveal();
    const crypto::secret::view token = access_token.reveal();
    if (cursor.empty()) {
      return json_body({{"client_id", id.text()},
                        {"secret", secret.text()},
                        {"access_token", token.text()},
                        {"count", count, false}});
    }
    return json_body({{"client_id", id.text()},
                      {"secret", secret.text()},
                      {"access_token", token.text()},
                      {"cursor", cursor},
                      {"count", count, false}});
  }();
  auto calling = call_plaid(http_, settings_, "/transactions/sync", std::move(body), false,
                             {api.get(), &access_token});
  exchange done = co_await std::move(calling);
  if (done.failure) co_return failed<sync_page>(done);
  page_result read =
      parse_sync_page(parser, done.response.body, currencies_, done.response.body.capacity(), money_rows::set_aside);
  if (!read.ok) co_return invalid<sync_page>(done, read.error);
  co_return succeeded(done, std::move(read.page));
}

boost::asio::awaitable<result<remove_result>> client::remove_item(const crypto::secret& access_token) const {
  // Held for the whole request: a SIGHUP that replaces the secret meanwhile does not touch it.
  const std::shared_ptr<const crypto::secret> api = current_secret();
  crypto::secret body = [&] {
    const crypto::secret::view id = client_id_.reveal();
    const crypto::secret::view secret = api->reveal();
    const crypto::secret::view token = access_token.reveal();
    return json_body({{"client_id", id.text()}, {"secret", secret.text()}, {"access_token", token.text()}});
  }();
  auto calling = call_plaid(http_, settings_, "/item/remove", std::move(body), false, {api.get(), &access_token});
  exchange done = co_await std::move(calling);
  if (done.failure) co_return failed<remove_result>(done);
  const std::string problem = json_object_problem(done.response.body);
  if (!problem.empty()) co_return invalid<remove_result>(done, problem);
  co_return succeeded(done, remove_result{});
}

boost::asio::awaitable<result<verification_key>> client::get_webhook_verification_key(std::string key_id) const {
  // Held for the whole request: a SIGHUP that replaces the secret meanwhile does not touch it.
  const std::shared_ptr<const crypto::secret> api = current_secret();
  crypto::secret body = [&] {
    const crypto::secret::view id = client_id_.reveal();
    const crypto::secret::view secret = api->reveal();
    return json_body({{"client_id", id.text()}, {"secret", secret.text()}, {"key_id", key_id}});
  }();
  auto calling = call_plaid(http_, settings_, "/webhook_verification_key/get", std::move(body), false,
                             {api.get()});
  exchange done = co_await std::move(calling);
  if (done.failure) co_return failed<verification_key>(done);
  key_read read = read_verification_key(done.response.body);
  if (!read.value) co_return invalid<verification_key>(done, read.error);
  co_return succeeded(done, std::move(*read.value));
}

}  // namespace bankworker::plaid
