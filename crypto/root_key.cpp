#include "crypto/root_key.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>

#include "core/assert.hpp"

namespace bankworker::crypto {

namespace {

constexpr std::string_view key_id_label = "bankworker/root-key-id/v1";
constexpr std::size_t key_id_digest_bytes = 8;

std::string file_key_id(const secret& key) {
  const secret::view bytes_view = key.reveal();
  std::array<std::uint8_t, key_id_digest_bytes> digest{};
  // A keyed hash of a constant: the id reveals nothing about the key, yet two different keys get
  // different ids (with overwhelming probability).
  crypto_generichash(digest.data(), digest.size(), reinterpret_cast<const unsigned char*>(key_id_label.data()),
                     key_id_label.size(), bytes_view.data(), bytes_view.size());
  return "file:" + to_hex(digest);
}

}  // namespace

file_root_key::file_root_key(secret key) : key_(std::move(key)) {
  BW_INVARIANT(key_.size() == key_bytes);
  key_id_ = file_key_id(key_);
}

std::unique_ptr<file_root_key> file_root_key::load(const std::filesystem::path& path) {
  secret text;
  try {
    text = read_secret_file(path, file_permissions::owner_or_group_only);
  } catch (const secret_file_error& error) {
    throw root_key_error(root_key_failure::unusable_key, std::string("root key ") + error.what());
  }
  secret key;
  {
    const secret::view hex = text.reveal();
    if (hex.size() != key_bytes * 2) {
      throw root_key_error(root_key_failure::unusable_key,
                           "root key " + path.string() + ": expected 64 hexadecimal characters (openssl rand -hex 32)");
    }
    key = secret::filled(key_bytes, [&](unsigned char* out) {
      std::size_t decoded = 0;
      return sodium_hex2bin(out, key_bytes, hex.text().data(), hex.size(), nullptr, &decoded, nullptr) == 0 &&
             decoded == key_bytes;
    });
  }
  if (key.empty()) {
    throw root_key_error(root_key_failure::unusable_key,
                         "root key " + path.string() + ": expected 64 hexadecimal characters (openssl rand -hex 32)");
  }
  return std::make_unique<file_root_key>(std::move(key));
}

bytes file_root_key::wrap(const secret& key, std::span<const std::uint8_t> aad) {
  BW_ASSERT(!key.empty());
  bytes wrapped(nonce_bytes + key.size() + aead_tag_bytes);
  randombytes_buf(wrapped.data(), nonce_bytes);
  const secret::view root = key_.reveal();
  const secret::view plain = key.reveal();
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped.data() + nonce_bytes, &written, plain.data(), plain.size(),
                                             aad.data(), aad.size(), nullptr, wrapped.data(), root.data());
  BW_INVARIANT(written == plain.size() + aead_tag_bytes);
  return wrapped;
}

secret file_root_key::unwrap(std::span<const std::uint8_t> wrapped, std::span<const std::uint8_t> aad) {
  if (wrapped.size() <= nonce_bytes + aead_tag_bytes) {
    throw root_key_error(root_key_failure::authentication_failed, "wrapped key too short");
  }
  const std::size_t size = wrapped.size() - nonce_bytes - aead_tag_bytes;
  const secret::view root = key_.reveal();
  secret key = secret::filled(size, [&](unsigned char* out) {
    unsigned long long written = 0;
    return crypto_aead_xchacha20poly1305_ietf_decrypt(out, &written, nullptr, wrapped.data() + nonce_bytes,
                                                      wrapped.size() - nonce_bytes, aad.data(), aad.size(),
                                                      wrapped.data(), root.data()) == 0 &&
           written == size;
  });
  if (key.empty()) {
    throw root_key_error(root_key_failure::authentication_failed,
                         "a wrapped key does not authenticate under root key " + key_id_);
  }
  return key;
}

root_key_ring::root_key_ring(std::unique_ptr<root_key_provider> primary) {
  BW_ASSERT(primary != nullptr);
  providers_.push_back(std::move(primary));
}

void root_key_ring::add_previous(std::unique_ptr<root_key_provider> previous) {
  BW_ASSERT(previous != nullptr);
  providers_.push_back(std::move(previous));
}

root_key_provider& root_key_ring::primary() const {
  BW_INVARIANT(!providers_.empty());
  return *providers_.front();
}

root_key_provider& root_key_ring::find(std::string_view key_id) const {
  for (const auto& provider : providers_) {
    if (provider->key_id() == key_id) return *provider;
  }
  throw root_key_error(root_key_failure::unknown_key_id,
                       "no configured root key has id " + std::string(key_id) +
                           " (configure it, e.g. as BANKWORKER_ROOT_KEY_PREVIOUS_FILE during a root rotation)");
}

bytes tenant_key_associated_data(const core::uuid& tenant, std::uint32_t version, std::string_view root_key_id) {
  bytes aad;
  append_field(aad, std::string_view("bankworker/tenant-key/v1"));
  append_field(aad, tenant.bytes);
  bytes version_bytes;
  append_u32(version_bytes, version);
  append_field(aad, version_bytes);
  append_field(aad, root_key_id);
  return aad;
}

bytes signing_seed_associated_data(std::string_view signing_key_id, std::string_view root_key_id) {
  bytes aad;
  append_field(aad, std::string_view("bankworker/audit-signing-seed/v1"));
  append_field(aad, signing_key_id);
  append_field(aad, root_key_id);
  return aad;
}

}  // namespace bankworker::crypto
