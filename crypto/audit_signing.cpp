#include "crypto/audit_signing.hpp"

#include <sodium.h>

#include <charconv>

#include "core/assert.hpp"

namespace bankworker::crypto {

namespace {

constexpr std::string_view audit_row_label = "bankworker/audit-row/v1";
constexpr std::string_view checkpoint_header = "bankworker-audit-checkpoint v1\n";

static_assert(signature_bytes == crypto_sign_BYTES);
static_assert(public_key_bytes == crypto_sign_PUBLICKEYBYTES);
static_assert(signing_seed_bytes == crypto_sign_SEEDBYTES);

// Splits off the next "name value\n" line of a checkpoint; nullopt if it is not `name`.
std::optional<std::string_view> take_line(std::string_view& text, std::string_view name) {
  const std::size_t end = text.find('\n');
  if (end == std::string_view::npos) return std::nullopt;
  const std::string_view line = text.substr(0, end);
  text.remove_prefix(end + 1);
  if (!line.starts_with(name) || line.size() <= name.size() || line[name.size()] != ' ') return std::nullopt;
  return line.substr(name.size() + 1);
}

}  // namespace

bytes canonical_audit_row(const audit_row& row) {
  bytes out;
  out.reserve(128 + row.details.size());
  append_field(out, audit_row_label);
  append_field(out, row.tenant.bytes);
  bytes number;
  append_u64(number, static_cast<std::uint64_t>(row.seq));
  append_field(out, number);
  number.clear();
  append_u64(number, static_cast<std::uint64_t>(row.occurred_at_us));
  append_field(out, number);
  append_field(out, row.actor);
  append_field(out, row.action);
  append_field(out, row.subject);
  append_field(out, row.details);
  append_field(out, row.signing_key_id);
  return out;
}

audit_hash chain_hash(std::span<const std::uint8_t, audit_hash_bytes> prev_hash, const audit_row& row) {
  const bytes canonical = canonical_audit_row(row);
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, audit_hash_bytes);
  crypto_generichash_update(&state, prev_hash.data(), prev_hash.size());
  crypto_generichash_update(&state, canonical.data(), canonical.size());
  audit_hash hash{};
  crypto_generichash_final(&state, hash.data(), hash.size());
  return hash;
}

std::string signing_key_id_of(const public_key& key) {
  std::array<std::uint8_t, 32> digest{};
  crypto_generichash(digest.data(), digest.size(), key.data(), key.size(), nullptr, 0);
  return "ed25519:" + to_hex(std::span<const std::uint8_t>(digest.data(), 8));
}

signing_key::signing_key(secret seed) : seed_(std::move(seed)) {
  BW_INVARIANT(seed_.size() == signing_seed_bytes);
  const secret::view seed_bytes = seed_.reveal();
  secret_key_ = secret::filled(crypto_sign_SECRETKEYBYTES, [&](unsigned char* out) {
    return crypto_sign_seed_keypair(public_key_.data(), out, seed_bytes.data()) == 0;
  });
  BW_INVARIANT(!secret_key_.empty());
  key_id_ = signing_key_id_of(public_key_);
}

signing_key signing_key::generate() { return signing_key(secret::random(signing_seed_bytes)); }

signature signing_key::sign(std::span<const std::uint8_t> message) const {
  signature sig{};
  const secret::view key = secret_key_.reveal();
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), key.data());
  return sig;
}

bool verify_signature(const public_key& key, std::span<const std::uint8_t> message, const signature& sig) noexcept {
  return crypto_sign_verify_detached(sig.data(), message.data(), message.size(), key.data()) == 0;
}

std::string to_base64(std::span<const std::uint8_t> data) {
  std::string out(sodium_base64_ENCODED_LEN(data.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), data.data(), data.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::optional<bytes> from_base64(std::string_view text) {
  bytes out(text.size());
  std::size_t length = 0;
  const char* end = nullptr;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &length, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(length);
  return out;
}

std::optional<bytes> from_hex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  bytes out(text.size() / 2);
  std::size_t length = 0;
  const char* end = nullptr;
  if (sodium_hex2bin(out.data(), out.size(), text.data(), text.size(), nullptr, &length, &end) != 0 ||
      end != text.data() + text.size() || length != out.size()) {
    return std::nullopt;
  }
  return out;
}

std::string public_key_pem(const public_key& key) {
  // DER SubjectPublicKeyInfo for Ed25519 (RFC 8410): a fixed 12-byte prefix, then the key.
  bytes der = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
  der.insert(der.end(), key.begin(), key.end());
  return "-----BEGIN PUBLIC KEY-----\n" + to_base64(der) + "\n-----END PUBLIC KEY-----\n";
}

std::string checkpoint_body(const audit_checkpoint& checkpoint) {
  std::string text(checkpoint_header);
  text += "tenant " + checkpoint.tenant.to_string() + "\n";
  text += "size " + std::to_string(checkpoint.size) + "\n";
  text += "head " + to_hex(checkpoint.head) + "\n";
  text += "time " + checkpoint.time + "\n";
  text += "key " + checkpoint.key_id + "\n";
  return text;
}

std::string format_checkpoint(const audit_checkpoint& checkpoint, const signing_key& key) {
  BW_ASSERT(checkpoint.key_id == key.key_id());
  const std::string body = checkpoint_body(checkpoint);
  const signature sig =
      key.sign(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()));
  return body + "signature " + to_base64(sig) + "\n";
}

std::optional<audit_checkpoint> verify_checkpoint(std::string_view text, const public_key& key) {
  if (!text.starts_with(checkpoint_header)) return std::nullopt;
  std::string_view rest = text.substr(checkpoint_header.size());
  audit_checkpoint checkpoint;
  const auto tenant = take_line(rest, "tenant");
  const auto size = take_line(rest, "size");
  const auto head = take_line(rest, "head");
  const auto time = take_line(rest, "time");
  const auto key_id = take_line(rest, "key");
  const std::size_t body_bytes = text.size() - rest.size();
  const auto sig_text = take_line(rest, "signature");
  if (!tenant || !size || !head || !time || !key_id || !sig_text || !rest.empty()) return std::nullopt;
  const auto tenant_id = core::uuid::parse(*tenant);
  const auto head_bytes = from_hex(*head);
  const auto sig_bytes = from_base64(*sig_text);
  if (!tenant_id || !head_bytes || head_bytes->size() != audit_hash_bytes || !sig_bytes ||
      sig_bytes->size() != signature_bytes) {
    return std::nullopt;
  }
  const auto [end, error] = std::from_chars(size->data(), size->data() + size->size(), checkpoint.size);
  if (error != std::errc{} || end != size->data() + size->size() || checkpoint.size < 0) return std::nullopt;
  signature sig{};
  std::copy(sig_bytes->begin(), sig_bytes->end(), sig.begin());
  const std::span<const std::uint8_t> body(reinterpret_cast<const std::uint8_t*>(text.data()), body_bytes);
  if (!verify_signature(key, body, sig)) return std::nullopt;
  checkpoint.tenant = *tenant_id;
  std::copy(head_bytes->begin(), head_bytes->end(), checkpoint.head.begin());
  checkpoint.time = std::string(*time);
  checkpoint.key_id = std::string(*key_id);
  return checkpoint;
}

}  // namespace bankworker::crypto
