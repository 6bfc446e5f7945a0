#pragma once
// The root of the key hierarchy (DESIGN.md §5): root key → tenant key-encryption keys → data keys.
//
// A root key provider wraps and unwraps small keys (tenant KEKs, the audit signing seed) with
// associated data, and names itself with a key id that is stored beside everything it wrapped.
// The root key itself never leaves the provider: the file provider keeps it in guarded memory;
// a KMS provider (Vault Transit, AWS KMS) would keep it in the KMS and call encrypt/decrypt.
// Providers do no SQL; they may do I/O (a KMS provider talks HTTP, with a deadline per call).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/uuid.hpp"
#include "crypto/envelope.hpp"
#include "crypto/secret.hpp"

namespace bankworker::crypto {

// Why a root key operation failed.
enum class root_key_failure {
  // The key file is missing, unreadable, readable by others, or not 64 hexadecimal characters.
  // Needs operator action: fix the file (`chmod 600`, regenerate); retrying cannot help.
  unusable_key,
  // A wrapped key did not authenticate under this root key and its associated data: the row was
  // tampered with, moved, or wrapped by another root key with the same id. A security event.
  authentication_failed,
  // No configured root key has the id a row was wrapped with. Needs operator action: configure
  // that key (for example as the previous root key during a root rotation).
  unknown_key_id,
  // The provider could not be reached in time (a KMS). Retry later with a delay.
  unavailable,
};

class root_key_error : public std::runtime_error {
 public:
  root_key_error(root_key_failure failure, const std::string& message)
      : std::runtime_error(message), failure_(failure) {}
  root_key_failure failure() const noexcept { return failure_; }

 private:
  root_key_failure failure_;
};

class root_key_provider {
 public:
  virtual ~root_key_provider() = default;
  // Stored with every key this provider wraps; says which root key a row needs.
  virtual const std::string& key_id() const noexcept = 0;
  // Wraps `key` (at most a few hundred bytes) binding `aad`. Throws root_key_error.
  virtual bytes wrap(const secret& key, std::span<const std::uint8_t> aad) = 0;
  // Unwraps what wrap() returned for the same `aad`. Throws root_key_error.
  virtual secret unwrap(std::span<const std::uint8_t> wrapped, std::span<const std::uint8_t> aad) = 0;
};

// A 32-byte root key held in guarded memory: from BANKWORKER_ROOT_KEY_FILE or
// $CREDENTIALS_DIRECTORY/root-key (systemd LoadCredential=/LoadCredentialEncrypted=). The file
// holds 64 hexadecimal characters (`openssl rand -hex 32`), optionally followed by a newline, and
// must not be readable by others. Wrapping is XChaCha20-Poly1305 with a random nonce.
class file_root_key final : public root_key_provider {
 public:
  explicit file_root_key(secret key);
  static std::unique_ptr<file_root_key> load(const std::filesystem::path& path);

  const std::string& key_id() const noexcept override { return key_id_; }
  bytes wrap(const secret& key, std::span<const std::uint8_t> aad) override;
  secret unwrap(std::span<const std::uint8_t> wrapped, std::span<const std::uint8_t> aad) override;

 private:
  secret key_;
  std::string key_id_;  // "file:" + 16 hex digits of a keyed BLAKE2b of a fixed label
};

// The root keys this process knows: the primary wraps everything new; any of them unwraps what
// carries its id (the previous key stays configured during a root rotation).
class root_key_ring {
 public:
  root_key_ring() = default;
  explicit root_key_ring(std::unique_ptr<root_key_provider> primary);
  void add_previous(std::unique_ptr<root_key_provider> previous);

  bool empty() const noexcept { return providers_.empty(); }
  root_key_provider& primary() const;
  // The provider whose id is `key_id`; throws root_key_error(unknown_key_id).
  root_key_provider& find(std::string_view key_id) const;

 private:
  std::vector<std::unique_ptr<root_key_provider>> providers_;
};

// Associated data binding a tenant KEK to its tenant, version and root key id.
bytes tenant_key_associated_data(const core::uuid& tenant, std::uint32_t version, std::string_view root_key_id);
// Associated data binding the audit signing seed to its signing key id and root key id.
bytes signing_seed_associated_data(std::string_view signing_key_id, std::string_view root_key_id);

}  // namespace bankworker::crypto
