// Opening sealed secrets (crypto/envelope.*) that arrive corrupted or hostile. Fixed test keys and
// the known-answer context of tests/crypto/envelope_test.cpp, so its known envelope is a seed that
// opens. The first input byte picks the mode:
// - even: the rest is an envelope from the database. It must either be refused with an
//   envelope_error (no other exception) or open; and one that opens must be byte for byte the
//   envelope that sealing its plaintext gives with the test data key and the nonces it carries.
//   Only this harness ever seals under the test key, always with that data key, so anything else
//   that opened would be a forgery (or malleability) the AEAD and the commitment are there to stop.
// - odd: bytes 1-2 are a position, byte 3 a mask, byte 4 a tampering, the rest a plaintext. The
//   plaintext is sealed (twice: sealing is deterministic with fixed keys and nonces), must open to
//   exactly itself, must open after a rewrap to a new key version under the new key only, and
//   every tampering (one byte flipped, cut short, lengthened, another row, purpose, subject,
//   environment or key) must be refused with an envelope_error, never opened.
#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/limits.hpp"
#include "crypto/envelope.hpp"

using namespace bankworker;
using crypto::envelope_error;
using crypto::envelope_failure;
using crypto::secret;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

secret counting_key(std::uint8_t first) {
  return secret::filled(crypto::key_bytes, [&](unsigned char* out) {
    std::iota(out, out + crypto::key_bytes, first);
    return true;
  });
}

std::array<std::uint8_t, crypto::nonce_bytes> counting_nonce(std::uint8_t first) {
  std::array<std::uint8_t, crypto::nonce_bytes> nonce{};
  std::iota(nonce.begin(), nonce.end(), first);
  return nonce;
}

crypto::secret_context known_context() {
  return {.purpose = crypto::secret_purpose::plaid_access_token,
          .tenant = *core::uuid::parse("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6"),
          .secret_id = *core::uuid::parse("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"),
          .subject_id = "c0ffee00-1234-4abc-9def-0123456789ab",
          .environment = "sandbox"};
}

struct keys {
  secret kek = counting_key(0x00);
  secret other_kek = counting_key(0x01);
  secret data_key = counting_key(0x40);
};

const keys& test_keys() {
  static const bool initialised = sodium_init() >= 0;
  require(initialised);
  static const keys k;
  return k;
}

// The plaintext, or the failure; any other exception escapes and is reported by libFuzzer.
struct opened {
  std::optional<std::string> plaintext;
  envelope_failure failure = envelope_failure::malformed;
};

opened open_with(const secret& kek, const crypto::secret_context& context, std::span<const std::uint8_t> envelope) {
  opened result;
  try {
    const secret plaintext = crypto::open_envelope(kek, context, crypto::parse_envelope(envelope, context.tenant));
    result.plaintext = std::string(plaintext.reveal().text());
  } catch (const envelope_error& error) {
    result.failure = error.failure();
  }
  return result;
}

void require_refused(const secret& kek, const crypto::secret_context& context, std::span<const std::uint8_t> envelope) {
  require(!open_with(kek, context, envelope).plaintext.has_value());
}

void open_stored(std::span<const std::uint8_t> envelope) {
  const keys& k = test_keys();
  const crypto::secret_context context = known_context();
  const opened result = open_with(k.kek, context, envelope);
  if (!result.plaintext) return;
  require(!result.plaintext->empty());
  require(result.plaintext->size() <= limits::sealed_plaintext_bytes_max);
  const crypto::envelope_view view = crypto::parse_envelope(envelope, context.tenant);
  std::array<std::uint8_t, crypto::nonce_bytes> wrap_nonce{};
  std::array<std::uint8_t, crypto::nonce_bytes> payload_nonce{};
  std::copy_n(view.wrapped_data_key.begin(), crypto::nonce_bytes, wrap_nonce.begin());
  std::copy_n(view.nonce.begin(), crypto::nonce_bytes, payload_nonce.begin());
  const crypto::sealed_envelope again = crypto::seal_envelope_with(k.kek, view.kek_version, context, *result.plaintext,
                                                                   k.data_key, wrap_nonce, payload_nonce);
  require(again.envelope.size() == envelope.size());
  require(std::equal(again.envelope.begin(), again.envelope.end(), envelope.begin()));
}

void seal_and_tamper(std::uint16_t position, std::uint8_t mask, std::uint8_t tampering, std::string_view plaintext) {
  const keys& k = test_keys();
  const crypto::secret_context context = known_context();
  const auto wrap_nonce = counting_nonce(0x80);
  const auto payload_nonce = counting_nonce(0xa0);
  const std::uint32_t kek_version = 7;
  if (plaintext.empty() || plaintext.size() > limits::sealed_plaintext_bytes_max) {
    try {
      (void)crypto::seal_envelope_with(k.kek, kek_version, context, plaintext, k.data_key, wrap_nonce, payload_nonce);
    } catch (const envelope_error& error) {
      require(error.failure() == envelope_failure::invalid_input);
      return;
    }
    std::abort();  // an out-of-bounds plaintext was sealed
  }
  const crypto::sealed_envelope sealed =
      crypto::seal_envelope_with(k.kek, kek_version, context, plaintext, k.data_key, wrap_nonce, payload_nonce);
  const crypto::bytes& envelope = sealed.envelope;
  require(envelope.size() == crypto::envelope_overhead_bytes + plaintext.size());
  require(crypto::seal_envelope_with(k.kek, kek_version, context, plaintext, k.data_key, wrap_nonce, payload_nonce)
              .envelope == envelope);
  const opened genuine = open_with(k.kek, context, envelope);
  require(genuine.plaintext == std::string(plaintext));

  const std::uint8_t flip = mask == 0 ? 1 : mask;
  const std::size_t at = position % envelope.size();
  crypto::bytes tampered = envelope;
  switch (tampering % 8) {
    case 0: {
      tampered[at] ^= flip;
      const opened result = open_with(k.kek, context, tampered);
      require(!result.plaintext.has_value());
      // Format and algorithm are read first, then the tenant: a flip there is named as such.
      if (at < 2) require(result.failure == envelope_failure::unsupported_format);
      if (at >= 2 && at < 18) require(result.failure == envelope_failure::wrong_tenant);
      return;
    }
    case 1:
      tampered.resize(at);
      require_refused(k.kek, context, tampered);
      return;
    case 2:
      tampered.insert(tampered.begin() + static_cast<std::ptrdiff_t>(at), flip);
      require_refused(k.kek, context, tampered);
      tampered = envelope;
      tampered.push_back(flip);
      require_refused(k.kek, context, tampered);
      return;
    case 3: {
      crypto::secret_context moved = context;
      moved.secret_id.bytes[at % moved.secret_id.bytes.size()] ^= flip;
      require(open_with(k.kek, moved, envelope).failure == envelope_failure::authentication_failed);
      require_refused(k.kek, moved, envelope);
      return;
    }
    case 4: {
      crypto::secret_context moved = context;
      moved.purpose = (mask % 2 == 0) ? crypto::secret_purpose::stripe_webhook_secret
                                      : crypto::secret_purpose::stripe_api_key;
      require_refused(k.kek, moved, envelope);
      return;
    }
    case 5: {
      crypto::secret_context moved = context;
      moved.subject_id[at % moved.subject_id.size()] ^= static_cast<char>(flip);
      require_refused(k.kek, moved, envelope);
      moved = context;
      moved.environment = (mask % 2 == 0) ? "production" : "";
      require_refused(k.kek, moved, envelope);
      return;
    }
    case 6:
      require(open_with(k.other_kek, context, envelope).failure == envelope_failure::authentication_failed);
      return;
    case 7: {
      // A rewrap moves the data key to the new key version: the new key opens it, the old does not.
      const crypto::sealed_envelope rewrapped = crypto::rewrap_envelope(
          envelope, context.tenant, context.secret_id, context.purpose, k.kek, k.other_kek, kek_version + 1);
      require(open_with(k.other_kek, context, rewrapped.envelope).plaintext == std::string(plaintext));
      require_refused(k.kek, context, rewrapped.envelope);
      tampered = rewrapped.envelope;
      tampered[position % tampered.size()] ^= flip;
      require_refused(k.other_kek, context, tampered);
      return;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  if (size < 1) return 0;
  if (data[0] % 2 == 0) {
    open_stored(std::span<const std::uint8_t>(data + 1, size - 1));
    return 0;
  }
  if (size < 5) return 0;
  const auto position = static_cast<std::uint16_t>((data[1] << 8) | data[2]);
  const std::string_view plaintext(reinterpret_cast<const char*>(data + 5), size - 5);
  seal_and_tamper(position, data[3], data[4], plaintext);
  return 0;
}
