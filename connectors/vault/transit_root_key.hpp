#pragma once
// A root key held by HashiCorp Vault's Transit secrets engine: the root key never leaves Vault;
// wrap and unwrap are Transit's encrypt and decrypt with associated data (an AEAD key type such as
// chacha20-poly1305 or aes256-gcm96). It lives here, not in crypto/, because it talks HTTP.
//
// Calls block the calling thread for at most request_timeout: they run where key unwraps run (on
// the database thread pool, never on an io_context thread), and the KEK cache makes them rare.
// The Vault token and every key in flight stay in guarded memory or are zeroed after use.

#include <chrono>
#include <cstddef>
#include <string>

#include "crypto/root_key.hpp"
#include "crypto/secret.hpp"

namespace bankworker::connectors::vault {

struct transit_settings {
  std::string address;  // https://vault.example:8200; plain http only for loopback (tests)
  std::string mount = "transit";
  std::string key_name;
  std::chrono::milliseconds request_timeout{5'000};
  std::size_t response_bytes_max = 64 * 1024;
};

class transit_root_key final : public crypto::root_key_provider {
 public:
  // Throws std::invalid_argument for an unusable address, mount or key name.
  transit_root_key(transit_settings settings, crypto::secret token);

  // "vault:<mount>/<key name>"
  const std::string& key_id() const noexcept override { return key_id_; }
  // Throws crypto::root_key_error: unavailable (timeout, connection refused, 5xx, 429: retry later),
  // unusable_key (403, 404: fix the token or policy), authentication_failed (Vault could not
  // decrypt: wrong associated data or tampered ciphertext).
  crypto::bytes wrap(const crypto::secret& key, std::span<const std::uint8_t> aad) override;
  crypto::secret unwrap(std::span<const std::uint8_t> wrapped, std::span<const std::uint8_t> aad) override;

 private:
  struct response {
    long status = 0;
    std::string body;
  };
  response post(const std::string& operation, std::string& body) const;

  const transit_settings settings_;
  const crypto::secret token_;
  std::string key_id_;
};

}  // namespace bankworker::connectors::vault
