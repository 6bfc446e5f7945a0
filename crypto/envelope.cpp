#include "crypto/envelope.hpp"

#include <sodium.h>

#include <algorithm>

#include "core/assert.hpp"
#include "core/limits.hpp"

namespace bankworker::crypto {

namespace {

constexpr std::string_view payload_label = "bankworker/secret/v1";
constexpr std::string_view data_key_label = "bankworker/data-key/v1";
constexpr std::string_view commitment_label = "bankworker/commit/v1";
constexpr std::string_view shred_wrap_label = "bankworker/shred-wrap/v1";

static_assert(key_bytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(nonce_bytes == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(aead_tag_bytes == crypto_aead_xchacha20poly1305_ietf_ABYTES);
static_assert(key_bytes >= crypto_generichash_KEYBYTES_MIN && key_bytes <= crypto_generichash_KEYBYTES_MAX);

std::uint32_t read_u32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

std::uint16_t read_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((std::uint16_t{p[0]} << 8) | std::uint16_t{p[1]});
}

void check_context(const secret_context& context) {
  if (context.subject_id.empty() || context.subject_id.size() > limits::aad_field_bytes_max ||
      context.environment.size() > limits::aad_field_bytes_max) {
    throw envelope_error(envelope_failure::invalid_input);
  }
}

std::array<std::uint8_t, commitment_bytes> commitment_of(const secret::view& data_key,
                                                         std::span<const std::uint8_t> payload_nonce,
                                                         const bytes& payload_aad) {
  BW_ASSERT(data_key.size() == key_bytes);
  crypto_generichash_state state;
  crypto_generichash_init(&state, data_key.data(), data_key.size(), commitment_bytes);
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(commitment_label.data()),
                            commitment_label.size());
  crypto_generichash_update(&state, payload_nonce.data(), payload_nonce.size());
  crypto_generichash_update(&state, payload_aad.data(), payload_aad.size());
  std::array<std::uint8_t, commitment_bytes> tag{};
  crypto_generichash_final(&state, tag.data(), tag.size());
  sodium_memzero(&state, sizeof state);
  return tag;
}

// nonce ‖ XChaCha20-Poly1305(kek, data key, aad)
bytes wrap_data_key(const secret& kek, const secret& data_key, const bytes& aad,
                    std::span<const std::uint8_t, nonce_bytes> nonce) {
  BW_INVARIANT(kek.size() == key_bytes);
  BW_INVARIANT(data_key.size() == key_bytes);
  bytes wrapped(wrapped_key_bytes);
  std::copy(nonce.begin(), nonce.end(), wrapped.begin());
  const secret::view kek_bytes = kek.reveal();
  const secret::view key = data_key.reveal();
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped.data() + nonce_bytes, &written, key.data(), key.size(),
                                             aad.data(), aad.size(), nullptr, nonce.data(), kek_bytes.data());
  BW_INVARIANT(written == key_bytes + aead_tag_bytes);
  return wrapped;
}

secret unwrap_data_key(const secret& kek, std::span<const std::uint8_t> wrapped, const bytes& aad) {
  if (wrapped.size() != wrapped_key_bytes) throw envelope_error(envelope_failure::malformed);
  BW_INVARIANT(kek.size() == key_bytes);
  const secret::view kek_bytes = kek.reveal();
  secret data_key = secret::filled(key_bytes, [&](unsigned char* out) {
    unsigned long long written = 0;
    return crypto_aead_xchacha20poly1305_ietf_decrypt(out, &written, nullptr, wrapped.data() + nonce_bytes,
                                                      wrapped.size() - nonce_bytes, aad.data(), aad.size(),
                                                      wrapped.data(), kek_bytes.data()) == 0 &&
           written == key_bytes;
  });
  if (data_key.empty()) throw envelope_error(envelope_failure::authentication_failed);
  return data_key;
}

bytes build_envelope(std::uint8_t algorithm, const core::uuid& tenant, std::uint32_t kek_version,
                     const bytes& wrapped_data_key, std::span<const std::uint8_t> commitment,
                     std::span<const std::uint8_t> nonce, std::span<const std::uint8_t> ciphertext) {
  bytes out;
  out.reserve(envelope_fixed_header_bytes + wrapped_data_key.size() + commitment.size() + nonce.size() +
              ciphertext.size());
  out.push_back(envelope_format_v1);
  out.push_back(algorithm);
  out.insert(out.end(), tenant.bytes.begin(), tenant.bytes.end());
  append_u32(out, kek_version);
  BW_ASSERT(wrapped_data_key.size() <= 0xffff);
  out.push_back(static_cast<std::uint8_t>(wrapped_data_key.size() >> 8));
  out.push_back(static_cast<std::uint8_t>(wrapped_data_key.size() & 0xff));
  out.insert(out.end(), wrapped_data_key.begin(), wrapped_data_key.end());
  out.insert(out.end(), commitment.begin(), commitment.end());
  out.insert(out.end(), nonce.begin(), nonce.end());
  out.insert(out.end(), ciphertext.begin(), ciphertext.end());
  BW_INVARIANT(out.size() <= limits::envelope_bytes_max);
  return out;
}

// The key that wraps the data key: the KEK itself (algorithm 1), or the KEK and the secret's shred
// key together (algorithm 2). `holder` keeps a derived key alive for as long as the reference is used.
const secret& wrapping_key(std::uint8_t algorithm, const secret& kek, const core::uuid& secret_id,
                           const secret* shred_key, secret& holder) {
  if (algorithm == algorithm_xchacha20poly1305_blake2b) return kek;
  BW_INVARIANT(algorithm == algorithm_xchacha20poly1305_blake2b_shred);
  if (shred_key == nullptr) throw envelope_error(envelope_failure::shred_key_missing);
  holder = shred_wrap_key(kek, secret_id, *shred_key);
  return holder;
}

}  // namespace

secret shred_wrap_key(const secret& kek, const core::uuid& secret_id, const secret& shred_key) {
  BW_INVARIANT(kek.size() == key_bytes);
  if (shred_key.size() != shred_key_bytes) throw envelope_error(envelope_failure::malformed);
  bytes message;
  append_field(message, shred_wrap_label);
  append_field(message, secret_id.bytes);
  {
    const secret::view shred = shred_key.reveal();
    append_field(message, std::span<const std::uint8_t>(shred.data(), shred.size()));
  }
  const secret::view kek_bytes = kek.reveal();
  secret derived = secret::filled(key_bytes, [&](unsigned char* out) {
    return crypto_generichash(out, key_bytes, message.data(), message.size(), kek_bytes.data(), kek_bytes.size()) == 0;
  });
  sodium_memzero(message.data(), message.size());
  BW_INVARIANT(derived.size() == key_bytes);
  return derived;
}

std::string_view to_string(secret_purpose purpose) noexcept {
  switch (purpose) {
    case secret_purpose::plaid_access_token: return "plaid.access_token";
    case secret_purpose::stripe_webhook_secret: return "stripe.webhook_secret";
    case secret_purpose::stripe_api_key: return "stripe.api_key";
  }
  return "unknown";
}

std::optional<secret_purpose> parse_secret_purpose(std::string_view text) noexcept {
  for (const secret_purpose purpose : {secret_purpose::plaid_access_token, secret_purpose::stripe_webhook_secret,
                                       secret_purpose::stripe_api_key}) {
    if (to_string(purpose) == text) return purpose;
  }
  return std::nullopt;
}

std::string_view to_string(envelope_failure failure) noexcept {
  switch (failure) {
    case envelope_failure::too_large: return "envelope larger than envelope_bytes_max";
    case envelope_failure::malformed: return "envelope malformed";
    case envelope_failure::unsupported_format: return "envelope format or algorithm not supported";
    case envelope_failure::wrong_tenant: return "envelope names another tenant";
    case envelope_failure::authentication_failed: return "envelope does not authenticate for this context";
    case envelope_failure::invalid_input: return "secret or context out of bounds";
    case envelope_failure::shred_key_missing: return "envelope needs its shred key, which is gone (shredded)";
  }
  return "envelope error";
}

envelope_error::envelope_error(envelope_failure failure)
    : std::runtime_error(std::string(to_string(failure))), failure_(failure) {}

void append_field(bytes& out, std::span<const std::uint8_t> field) {
  BW_ASSERT(field.size() <= 0xffffffffu);
  append_u32(out, static_cast<std::uint32_t>(field.size()));
  out.insert(out.end(), field.begin(), field.end());
}

void append_field(bytes& out, std::string_view field) {
  append_field(out, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(field.data()), field.size()));
}

void append_u32(bytes& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

void append_u64(bytes& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

std::string to_hex(std::span<const std::uint8_t> data) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (const std::uint8_t b : data) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0f]);
  }
  return out;
}

bytes payload_associated_data(const secret_context& context, std::uint8_t algorithm) {
  bytes aad;
  append_field(aad, payload_label);
  const std::array<std::uint8_t, 2> format{envelope_format_v1, algorithm};
  append_field(aad, format);
  append_field(aad, to_string(context.purpose));
  append_field(aad, context.tenant.bytes);
  append_field(aad, context.secret_id.bytes);
  append_field(aad, context.subject_id);
  append_field(aad, context.environment);
  return aad;
}

bytes data_key_associated_data(const core::uuid& tenant, std::uint32_t kek_version, const core::uuid& secret_id,
                               secret_purpose purpose) {
  bytes aad;
  append_field(aad, data_key_label);
  append_field(aad, tenant.bytes);
  bytes version;
  append_u32(version, kek_version);
  append_field(aad, version);
  append_field(aad, secret_id.bytes);
  append_field(aad, to_string(purpose));
  return aad;
}

envelope_view parse_envelope(std::span<const std::uint8_t> envelope, const core::uuid& expected_tenant) {
  if (envelope.size() > limits::envelope_bytes_max) throw envelope_error(envelope_failure::too_large);
  if (envelope.size() < 2) throw envelope_error(envelope_failure::malformed);
  envelope_view view;
  view.format = envelope[0];
  view.algorithm = envelope[1];
  if (view.format != envelope_format_v1 || (view.algorithm != algorithm_xchacha20poly1305_blake2b &&
                                            view.algorithm != algorithm_xchacha20poly1305_blake2b_shred)) {
    throw envelope_error(envelope_failure::unsupported_format);
  }
  if (envelope.size() < envelope_overhead_bytes) throw envelope_error(envelope_failure::malformed);
  std::copy_n(envelope.begin() + 2, 16, view.tenant.bytes.begin());
  // Checked before anything else is read or any key is looked up: the caller's tenant is the
  // truth, the header only a hint.
  if (!(view.tenant == expected_tenant)) throw envelope_error(envelope_failure::wrong_tenant);
  view.kek_version = read_u32(envelope.data() + 18);
  const std::size_t wrapped_size = read_u16(envelope.data() + 22);
  if (view.kek_version == 0 || wrapped_size != wrapped_key_bytes) throw envelope_error(envelope_failure::malformed);
  std::size_t at = envelope_fixed_header_bytes;
  view.wrapped_data_key = envelope.subspan(at, wrapped_size);
  at += wrapped_size;
  view.commitment = envelope.subspan(at, commitment_bytes);
  at += commitment_bytes;
  view.nonce = envelope.subspan(at, nonce_bytes);
  at += nonce_bytes;
  view.ciphertext = envelope.subspan(at);
  if (view.ciphertext.size() <= aead_tag_bytes ||
      view.ciphertext.size() > limits::sealed_plaintext_bytes_max + aead_tag_bytes) {
    throw envelope_error(envelope_failure::malformed);
  }
  return view;
}

sealed_envelope seal_envelope_with(const secret& kek, std::uint32_t kek_version, const secret_context& context,
                                   std::string_view plaintext, const secret& data_key,
                                   std::span<const std::uint8_t, nonce_bytes> wrap_nonce,
                                   std::span<const std::uint8_t, nonce_bytes> payload_nonce,
                                   const secret* shred_key) {
  if (plaintext.empty() || plaintext.size() > limits::sealed_plaintext_bytes_max) {
    throw envelope_error(envelope_failure::invalid_input);
  }
  check_context(context);
  BW_INVARIANT(kek_version > 0);

  const std::uint8_t algorithm =
      shred_key != nullptr ? algorithm_xchacha20poly1305_blake2b_shred : algorithm_xchacha20poly1305_blake2b;
  secret derived;
  const secret& wrapper = wrapping_key(algorithm, kek, context.secret_id, shred_key, derived);
  const bytes key_aad = data_key_associated_data(context.tenant, kek_version, context.secret_id, context.purpose);
  sealed_envelope sealed;
  sealed.kek_version = kek_version;
  sealed.wrapped_data_key = wrap_data_key(wrapper, data_key, key_aad, wrap_nonce);

  const bytes aad = payload_associated_data(context, algorithm);
  bytes ciphertext(plaintext.size() + aead_tag_bytes);
  const secret::view key = data_key.reveal();
  const auto commitment = commitment_of(key, payload_nonce, aad);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(ciphertext.data(), &written,
                                             reinterpret_cast<const unsigned char*>(plaintext.data()),
                                             plaintext.size(), aad.data(), aad.size(), nullptr, payload_nonce.data(),
                                             key.data());
  BW_INVARIANT(written == ciphertext.size());
  sealed.envelope = build_envelope(algorithm, context.tenant, kek_version, sealed.wrapped_data_key, commitment,
                                   payload_nonce, ciphertext);
  return sealed;
}

sealed_envelope seal_envelope(const secret& kek, std::uint32_t kek_version, const secret_context& context,
                              std::string_view plaintext, const secret* shred_key) {
  const secret data_key = secret::random(key_bytes);
  std::array<std::uint8_t, nonce_bytes> wrap_nonce{};
  std::array<std::uint8_t, nonce_bytes> payload_nonce{};
  randombytes_buf(wrap_nonce.data(), wrap_nonce.size());
  randombytes_buf(payload_nonce.data(), payload_nonce.size());
  return seal_envelope_with(kek, kek_version, context, plaintext, data_key, wrap_nonce, payload_nonce, shred_key);
}

secret open_envelope(const secret& kek, const secret_context& context, const envelope_view& view,
                     const secret* shred_key) {
  check_context(context);
  BW_ASSERT(view.tenant == context.tenant);
  secret derived;
  const secret& wrapper = wrapping_key(view.algorithm, kek, context.secret_id, shred_key, derived);
  const bytes key_aad = data_key_associated_data(context.tenant, view.kek_version, context.secret_id, context.purpose);
  const secret data_key = unwrap_data_key(wrapper, view.wrapped_data_key, key_aad);

  const bytes aad = payload_associated_data(context, view.algorithm);
  const secret::view key = data_key.reveal();
  const auto expected = commitment_of(key, view.nonce, aad);
  if (sodium_memcmp(expected.data(), view.commitment.data(), commitment_bytes) != 0) {
    throw envelope_error(envelope_failure::authentication_failed);
  }
  const std::size_t plaintext_size = view.ciphertext.size() - aead_tag_bytes;
  secret plaintext = secret::filled(plaintext_size, [&](unsigned char* out) {
    unsigned long long written = 0;
    return crypto_aead_xchacha20poly1305_ietf_decrypt(out, &written, nullptr, view.ciphertext.data(),
                                                      view.ciphertext.size(), aad.data(), aad.size(),
                                                      view.nonce.data(), key.data()) == 0 &&
           written == plaintext_size;
  });
  if (plaintext.empty()) throw envelope_error(envelope_failure::authentication_failed);
  return plaintext;
}

sealed_envelope rewrap_envelope(std::span<const std::uint8_t> envelope, const core::uuid& tenant,
                                const core::uuid& secret_id, secret_purpose purpose, const secret& old_kek,
                                const secret& new_kek, std::uint32_t new_version, const secret* shred_key) {
  BW_INVARIANT(new_version > 0);
  const envelope_view view = parse_envelope(envelope, tenant);
  secret old_derived;
  secret new_derived;
  const secret& old_wrapper = wrapping_key(view.algorithm, old_kek, secret_id, shred_key, old_derived);
  const secret& new_wrapper = wrapping_key(view.algorithm, new_kek, secret_id, shred_key, new_derived);
  const secret data_key = unwrap_data_key(old_wrapper, view.wrapped_data_key,
                                          data_key_associated_data(tenant, view.kek_version, secret_id, purpose));
  std::array<std::uint8_t, nonce_bytes> wrap_nonce{};
  randombytes_buf(wrap_nonce.data(), wrap_nonce.size());
  sealed_envelope sealed;
  sealed.kek_version = new_version;
  sealed.wrapped_data_key =
      wrap_data_key(new_wrapper, data_key, data_key_associated_data(tenant, new_version, secret_id, purpose), wrap_nonce);
  sealed.envelope = build_envelope(view.algorithm, tenant, new_version, sealed.wrapped_data_key, view.commitment, view.nonce,
                                   view.ciphertext);
  return sealed;
}

}  // namespace bankworker::crypto
