#pragma once
// Envelope encryption of one secret (DESIGN.md §5; the byte layout is in crypto/README.md).
//
// A fresh random data key per secret encrypts the plaintext with XChaCha20-Poly1305; the data key
// is wrapped by the tenant's key-encryption key (KEK) with associated data naming the tenant, the
// KEK version, the row and the purpose. A key-commitment tag (keyed BLAKE2b under the data key)
// binds the ciphertext to exactly one data key, which Poly1305 alone does not.
//
// Pure functions: no SQL, no network, no clock. The tenant always comes from the caller's
// authenticated context; the tenant and KEK version in the header are hints, and a header naming
// another tenant is refused before any key is touched.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/uuid.hpp"
#include "crypto/secret.hpp"

namespace bankworker::crypto {

using bytes = std::vector<std::uint8_t>;

// What a sealed secret is for; bound into its associated data so it cannot be used as another.
enum class secret_purpose { plaid_access_token, stripe_webhook_secret, stripe_api_key };
std::string_view to_string(secret_purpose purpose) noexcept;
std::optional<secret_purpose> parse_secret_purpose(std::string_view text) noexcept;

// Everything a ciphertext is bound to. It comes from the caller's authenticated context (the job's
// tenant, the row it is working on), never from the stored bytes.
struct secret_context {
  secret_purpose purpose = secret_purpose::plaid_access_token;
  core::uuid tenant;
  core::uuid secret_id;     // the sealed_secrets row
  std::string subject_id;   // the row the secret belongs to (a connection, a webhook endpoint)
  std::string environment;  // the Plaid environment (sandbox, development, production); empty otherwise
};

inline constexpr std::uint8_t envelope_format_v1 = 1;
// XChaCha20-Poly1305 payload and data-key wrap, BLAKE2b-256 key commitment; the data key is wrapped
// by the tenant KEK itself. Still opened (rows sealed before migration 0026); no longer sealed,
// because a copy of such a row opens for as long as the KEK lives, whatever was shredded since.
inline constexpr std::uint8_t algorithm_xchacha20poly1305_blake2b = 1;
// The same, except that the data key is wrapped by BLAKE2b-256(key = KEK, label ‖ secret id ‖
// shred key): the shred key is 32 random bytes per secret, stored in its own row apart from the
// envelope (bankworker.secret_shred_keys) and deleted by the shred. Without it no key the system
// holds unwraps the data key, so a copy of the envelope taken before the shred stays shut.
inline constexpr std::uint8_t algorithm_xchacha20poly1305_blake2b_shred = 2;

inline constexpr std::size_t key_bytes = 32;
inline constexpr std::size_t nonce_bytes = 24;
inline constexpr std::size_t aead_tag_bytes = 16;
inline constexpr std::size_t commitment_bytes = 32;
inline constexpr std::size_t wrapped_key_bytes = nonce_bytes + key_bytes + aead_tag_bytes;  // 72
inline constexpr std::size_t shred_key_bytes = 32;
// format, algorithm, tenant, KEK version, wrapped-key length.
inline constexpr std::size_t envelope_fixed_header_bytes = 1 + 1 + 16 + 4 + 2;
inline constexpr std::size_t envelope_overhead_bytes =
    envelope_fixed_header_bytes + wrapped_key_bytes + commitment_bytes + nonce_bytes + aead_tag_bytes;

// Why an envelope did not open. Every kind is permanent for that row: retrying cannot help.
enum class envelope_failure {
  // Longer than limits::envelope_bytes_max: refused before parsing. The row is corrupt or hostile;
  // alert and re-link the secret.
  too_large,
  // Shorter than its header or with inconsistent lengths. The row is corrupt; re-link the secret.
  malformed,
  // A format version or algorithm this binary does not know. Run the binary that wrote it (or a
  // newer one); never guess.
  unsupported_format,
  // The header names a tenant other than the caller's. Someone moved a ciphertext between
  // tenants: a security event. Nothing was decrypted.
  wrong_tenant,
  // The wrapped data key, the commitment tag or the payload does not authenticate for this
  // context and key: tampered bytes, a ciphertext moved to another row or purpose, or the wrong
  // key. A security event; re-link the secret.
  authentication_failed,
  // The plaintext to seal is empty or longer than limits::sealed_plaintext_bytes_max, or an
  // associated-data field is longer than limits::aad_field_bytes_max. A caller bug or bad input;
  // refuse it.
  invalid_input,
  // The envelope is of the shred-key algorithm and no shred key was given: the secret was shredded
  // (its shred key deleted), or the row was restored from a copy taken before. Nothing was
  // decrypted; permanent (link the account or add the secret again).
  shred_key_missing,
};
std::string_view to_string(envelope_failure failure) noexcept;

class envelope_error : public std::runtime_error {
 public:
  explicit envelope_error(envelope_failure failure);
  envelope_failure failure() const noexcept { return failure_; }

 private:
  envelope_failure failure_;
};

// The parsed header of an envelope. The spans point into the caller's bytes.
struct envelope_view {
  std::uint8_t format = 0;
  std::uint8_t algorithm = 0;
  core::uuid tenant;
  std::uint32_t kek_version = 0;
  std::span<const std::uint8_t> wrapped_data_key;
  std::span<const std::uint8_t> commitment;
  std::span<const std::uint8_t> nonce;
  std::span<const std::uint8_t> ciphertext;  // including the Poly1305 tag
};

// Checks the size bound, the layout, the format and algorithm, and that the header's tenant is
// `expected_tenant`, in that order, before any key is needed. Throws envelope_error.
envelope_view parse_envelope(std::span<const std::uint8_t> envelope, const core::uuid& expected_tenant);

struct sealed_envelope {
  std::uint32_t kek_version = 0;
  bytes wrapped_data_key;  // also inside `envelope`; stored beside it so rewrap and status can query it
  bytes envelope;
};

// Seals `plaintext` for `context` under `kek` (version `kek_version`) with a fresh data key and
// fresh nonces. With a `shred_key` (shred_key_bytes random bytes, stored apart from the envelope)
// the envelope is of algorithm 2 and its data key needs the shred key too; without one it is of
// the legacy algorithm 1 (known-answer tests and the fuzzer only: key_store always gives one).
// Throws envelope_error(invalid_input) for an empty or oversized plaintext.
sealed_envelope seal_envelope(const secret& kek, std::uint32_t kek_version, const secret_context& context,
                              std::string_view plaintext, const secret* shred_key = nullptr);

// The same with the data key and both nonces supplied: for known-answer tests only.
sealed_envelope seal_envelope_with(const secret& kek, std::uint32_t kek_version, const secret_context& context,
                                   std::string_view plaintext, const secret& data_key,
                                   std::span<const std::uint8_t, nonce_bytes> wrap_nonce,
                                   std::span<const std::uint8_t, nonce_bytes> payload_nonce,
                                   const secret* shred_key = nullptr);

// Opens an envelope whose header was parsed with parse_envelope(…, context.tenant). `kek` must be
// the tenant's key of version `view.kek_version`; `shred_key` the secret's shred key when the
// envelope is of algorithm 2 (ignored for algorithm 1). Throws envelope_error (shred_key_missing
// when algorithm 2 comes without one).
secret open_envelope(const secret& kek, const secret_context& context, const envelope_view& view,
                     const secret* shred_key = nullptr);

// Re-wraps the data key of `envelope` from `old_kek` to `new_kek` (version `new_version`) without
// decrypting the payload: only the wrapped data key and the header change; the algorithm and the
// shred key (needed for algorithm 2, unchanged) stay. The purpose, tenant and row are what the data
// key's associated data binds. Throws envelope_error.
sealed_envelope rewrap_envelope(std::span<const std::uint8_t> envelope, const core::uuid& tenant,
                                const core::uuid& secret_id, secret_purpose purpose, const secret& old_kek,
                                const secret& new_kek, std::uint32_t new_version, const secret* shred_key = nullptr);

// The canonical associated data, exposed for known-answer tests and the README. Each field is a
// 4-byte big-endian length followed by its bytes, after a label that names the structure.
bytes payload_associated_data(const secret_context& context,
                              std::uint8_t algorithm = algorithm_xchacha20poly1305_blake2b);
bytes data_key_associated_data(const core::uuid& tenant, std::uint32_t kek_version, const core::uuid& secret_id,
                               secret_purpose purpose);
// The key that wraps an algorithm-2 data key: BLAKE2b-256(key = kek, "bankworker/shred-wrap/v1" ‖
// secret id (16) ‖ shred key (32)), each field length-prefixed.
secret shred_wrap_key(const secret& kek, const core::uuid& secret_id, const secret& shred_key);

// Appends one length-prefixed field (4-byte big-endian length, then the bytes).
void append_field(bytes& out, std::span<const std::uint8_t> field);
void append_field(bytes& out, std::string_view field);
void append_u32(bytes& out, std::uint32_t value);
void append_u64(bytes& out, std::uint64_t value);

// Lowercase hexadecimal, for ids and tests.
std::string to_hex(std::span<const std::uint8_t> data);

}  // namespace bankworker::crypto
