#include "connectors/vault/transit_root_key.hpp"

#include <curl/curl.h>
#include <sodium.h>

#include <simdjson.h>

#include <stdexcept>

#include "core/assert.hpp"
#include "crypto/audit_signing.hpp"

namespace bankworker::connectors::vault {

namespace {

using crypto::root_key_error;
using crypto::root_key_failure;

bool is_name(std::string_view text) {
  if (text.empty() || text.size() > 128) return false;
  for (const char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                    c == '.';
    if (!ok) return false;
  }
  return true;
}

bool is_allowed_address(std::string_view url) {
  if (url.starts_with("https://") && url.size() > 8) return true;
  return url.starts_with("http://127.") || url.starts_with("http://localhost:") || url.starts_with("http://[::1]");
}

struct capped_body {
  std::string* out;
  std::size_t max;
  bool overflow = false;
};

std::size_t write_capped(char* data, std::size_t size, std::size_t count, void* user) {
  auto* body = static_cast<capped_body*>(user);
  const std::size_t bytes = size * count;
  if (body->out->size() + bytes > body->max) {
    body->overflow = true;
    return 0;  // makes libcurl fail the transfer
  }
  body->out->append(data, bytes);
  return bytes;
}

// Zeroes a std::string's bytes (request and response bodies carry key material in base64).
void wipe(std::string& text) {
  if (!text.empty()) sodium_memzero(text.data(), text.size());
  text.clear();
}

std::string base64_of(std::span<const std::uint8_t> data) { return crypto::to_base64(data); }

// The first message of Vault's {"errors": [...]}, for the error text (never contains key bytes).
std::string vault_error_text(const std::string& body) {
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(body);
  try {
    auto document = parser.iterate(padded);
    for (auto error : document["errors"].get_array()) {
      std::string_view text = error.get_string();
      return std::string(text.substr(0, 200));
    }
  } catch (const simdjson::simdjson_error&) {
  }
  return "no error message";
}

}  // namespace

transit_root_key::transit_root_key(transit_settings settings, crypto::secret token)
    : settings_(std::move(settings)), token_(std::move(token)) {
  if (!is_allowed_address(settings_.address)) {
    throw std::invalid_argument("vault address must be https:// (plain http only for loopback)");
  }
  if (!is_name(settings_.mount) || !is_name(settings_.key_name)) {
    throw std::invalid_argument("vault mount and key name must be 1..128 of [A-Za-z0-9._-]");
  }
  if (token_.empty()) throw std::invalid_argument("vault token is empty");
  key_id_ = "vault:" + settings_.mount + "/" + settings_.key_name;
}

transit_root_key::response transit_root_key::post(const std::string& operation, std::string& body) const {
  const std::string url = settings_.address + "/v1/" + settings_.mount + "/" + operation + "/" + settings_.key_name;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) throw root_key_error(root_key_failure::unavailable, "vault: curl_easy_init failed");
  response result;
  capped_body sink{&result.body, settings_.response_bytes_max};
  curl_slist* headers = nullptr;
  std::string token_header;
  {
    const crypto::secret::view token = token_.reveal();
    token_header = "X-Vault-Token: " + std::string(token.text());
  }
  headers = curl_slist_append(headers, token_header.c_str());
  wipe(token_header);  // libcurl copied it
  headers = curl_slist_append(headers, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(settings_.request_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(settings_.request_timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_capped);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  const CURLcode code = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  wipe(body);
  if (sink.overflow) {
    wipe(result.body);
    throw root_key_error(root_key_failure::unavailable,
                         "vault " + operation + ": response larger than response_bytes_max");
  }
  if (code != CURLE_OK) {
    wipe(result.body);
    throw root_key_error(root_key_failure::unavailable,
                         "vault " + operation + ": " + curl_easy_strerror(code) + " (retry later)");
  }
  if (result.status == 403 || result.status == 404) {
    const std::string why = vault_error_text(result.body);
    wipe(result.body);
    throw root_key_error(root_key_failure::unusable_key, "vault " + operation + ": HTTP " +
                                                             std::to_string(result.status) + ": " + why +
                                                             " (check the token's policy and the key name)");
  }
  if (result.status == 429 || result.status >= 500) {
    wipe(result.body);
    throw root_key_error(root_key_failure::unavailable,
                         "vault " + operation + ": HTTP " + std::to_string(result.status) + " (retry later)");
  }
  return result;
}

crypto::bytes transit_root_key::wrap(const crypto::secret& key, std::span<const std::uint8_t> aad) {
  std::string body;
  {
    const crypto::secret::view plain = key.reveal();
    std::string encoded = base64_of(std::span<const std::uint8_t>(plain.data(), plain.size()));
    body = "{\"plaintext\":\"" + encoded + "\",\"associated_data\":\"" + base64_of(aad) + "\"}";
    wipe(encoded);
  }
  response answer = post("encrypt", body);
  if (answer.status != 200) {
    const std::string why = vault_error_text(answer.body);
    throw root_key_error(root_key_failure::unavailable,
                         "vault encrypt: HTTP " + std::to_string(answer.status) + ": " + why);
  }
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(answer.body);
  std::string ciphertext;
  try {
    auto document = parser.iterate(padded);
    std::string_view text = document["data"]["ciphertext"].get_string();
    ciphertext = std::string(text);
  } catch (const simdjson::simdjson_error&) {
    throw root_key_error(root_key_failure::unavailable, "vault encrypt: response without data.ciphertext");
  }
  if (!ciphertext.starts_with("vault:v") || ciphertext.size() > 1024) {
    throw root_key_error(root_key_failure::unavailable, "vault encrypt: unexpected ciphertext format");
  }
  return crypto::bytes(ciphertext.begin(), ciphertext.end());
}

crypto::secret transit_root_key::unwrap(std::span<const std::uint8_t> wrapped, std::span<const std::uint8_t> aad) {
  const std::string ciphertext(wrapped.begin(), wrapped.end());
  if (!ciphertext.starts_with("vault:v") || ciphertext.find('"') != std::string::npos ||
      ciphertext.find('\\') != std::string::npos) {
    throw root_key_error(root_key_failure::authentication_failed, "vault decrypt: stored ciphertext is not Vault's");
  }
  std::string body = "{\"ciphertext\":\"" + ciphertext + "\",\"associated_data\":\"" + base64_of(aad) + "\"}";
  response answer = post("decrypt", body);
  if (answer.status == 400) {
    const std::string why = vault_error_text(answer.body);
    throw root_key_error(root_key_failure::authentication_failed, "vault decrypt: " + why);
  }
  if (answer.status != 200) {
    throw root_key_error(root_key_failure::unavailable, "vault decrypt: HTTP " + std::to_string(answer.status));
  }
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(answer.body);
  wipe(answer.body);
  crypto::secret key;
  try {
    auto document = parser.iterate(padded);
    std::string_view encoded = document["data"]["plaintext"].get_string();
    const std::size_t size_max = encoded.size() / 4 * 3 + 3;
    if (encoded.empty() || size_max > 1024) throw simdjson::simdjson_error(simdjson::INCORRECT_TYPE);
    std::size_t decoded = 0;
    crypto::secret buffer = crypto::secret::filled(size_max, [&](unsigned char* out) {
      return sodium_base642bin(out, size_max, encoded.data(), encoded.size(), nullptr, &decoded, nullptr,
                               sodium_base64_VARIANT_ORIGINAL) == 0;
    });
    if (!buffer.empty()) {
      const crypto::secret::view bytes = buffer.reveal();
      key = crypto::secret::copy_of(bytes.text().substr(0, decoded));
    }
  } catch (const simdjson::simdjson_error&) {
  }
  sodium_memzero(padded.data(), padded.size());
  if (key.empty()) throw root_key_error(root_key_failure::unavailable, "vault decrypt: response without data.plaintext");
  return key;
}

}  // namespace bankworker::connectors::vault
