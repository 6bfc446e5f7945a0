#include "tests/support/scope_token.hpp"

#include <sodium.h>

#include <chrono>

namespace bankworker::test {

scope_key scope_key::random(std::string id) {
  scope_key key;
  key.id = std::move(id);
  randombytes_buf(key.bytes.data(), key.bytes.size());
  return key;
}

std::string scope_key::hex() const {
  char text[65];
  sodium_bin2hex(text, sizeof text, bytes.data(), bytes.size());
  return text;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string mint_scope_token(const scope_key& key, const std::string& tenant, std::int64_t expires_unix) {
  const std::string body = key.id + "." + tenant + "." + std::to_string(expires_unix);
  const std::string message = "bankworker-scope-v1." + body;
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, key.bytes.data(), key.bytes.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(message.data()), message.size());
  crypto_auth_hmacsha256_final(&state, mac);
  char hex[2 * sizeof mac + 1];
  sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
  return "v1." + body + "." + hex;
}

void add_scope_key(pqxx::transaction_base& tx, const scope_key& key) {
  tx.exec_params("SELECT bankworker.add_scope_key($1, decode($2, 'hex'))", key.id, key.hex());
}

}  // namespace bankworker::test
