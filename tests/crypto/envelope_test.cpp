// The envelope format: known answers (a format change breaks them), the documented layout read
// with libsodium primitives alone, tamper and transplant resistance, and bounds.
#include <catch2/catch.hpp>

#include <sodium.h>

#include <array>
#include <numeric>
#include <string_view>

#include "core/limits.hpp"
#include "crypto/envelope.hpp"

using namespace bankworker;
using crypto::envelope_error;
using crypto::envelope_failure;
using crypto::secret;

namespace {

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

core::uuid id(const char* text) { return *core::uuid::parse(text); }

crypto::secret_context known_context() {
  return {.purpose = crypto::secret_purpose::plaid_access_token,
          .tenant = id("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6"),
          .secret_id = id("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"),
          .subject_id = "c0ffee00-1234-4abc-9def-0123456789ab",
          .environment = "sandbox"};
}

constexpr std::string_view known_token = "access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6";

crypto::sealed_envelope known_envelope() {
  const secret kek = counting_key(0x00);
  const secret data_key = counting_key(0x40);
  const auto wrap_nonce = counting_nonce(0x80);
  const auto payload_nonce = counting_nonce(0xa0);
  return crypto::seal_envelope_with(kek, 7, known_context(), known_token, data_key, wrap_nonce, payload_nonce);
}

std::string opened_text(const secret& kek, const crypto::secret_context& context, const crypto::bytes& envelope) {
  const secret plaintext = crypto::open_envelope(kek, context, crypto::parse_envelope(envelope, context.tenant));
  return std::string(plaintext.reveal().text());
}

envelope_failure failure_of(const secret& kek, const crypto::secret_context& context, const crypto::bytes& envelope) {
  try {
    opened_text(kek, context, envelope);
  } catch (const envelope_error& error) {
    return error.failure();
  }
  FAIL("the envelope opened");
  return envelope_failure::malformed;
}

}  // namespace

TEST_CASE("the associated data has the documented canonical encoding", "[crypto][envelope]") {
  const crypto::bytes aad = crypto::payload_associated_data(known_context());
  CHECK(crypto::to_hex(aad) ==
        "00000014" "62616e6b776f726b65722f7365637265742f7631"  // "bankworker/secret/v1"
        "00000002" "0101"                                      // format 1, algorithm 1
        "00000012" "706c6169642e6163636573735f746f6b656e"      // "plaid.access_token"
        "00000010" "0d7f6e2a3b1c4e5d8f90a1b2c3d4e5f6"          // tenant
        "00000010" "5a4b3c2d1e0f4a9b8c7d6e5f4a3b2c1d"          // secret id
        "00000024" "63306666656530302d313233342d346162632d396465662d303132333435363738396162"  // subject
        "00000007" "73616e64626f78");                          // "sandbox"
}

TEST_CASE("sealing with fixed keys and nonces gives the known envelope", "[crypto][envelope][kat]") {
  const crypto::sealed_envelope sealed = known_envelope();
  CHECK(sealed.kek_version == 7);
  CHECK(sealed.envelope.size() == crypto::envelope_overhead_bytes + known_token.size());
  CHECK(crypto::to_hex(sealed.wrapped_data_key) ==
        "808182838485868788898a8b8c8d8e8f909192939495969702af1b1aa3d1052d545169b003f0569e29c00e82d7aeecae"
        "b8333081eb8f422e301482d2c41abad0dd04c6c416a6f937");
  CHECK(crypto::to_hex(sealed.envelope) ==
        "01010d7f6e2a3b1c4e5d8f90a1b2c3d4e5f6000000070048808182838485868788898a8b8c8d8e8f9091929394959697"
        "02af1b1aa3d1052d545169b003f0569e29c00e82d7aeecaeb8333081eb8f422e301482d2c41abad0dd04c6c416a6f937"
        "75d531e2420a678796d7d44644b9609906d958faa5528698fdb2d71366ad9dd2a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
        "b0b1b2b3b4b5b6b70ab9729d0e91fa384b74f306037a8d976885b68f612e5df6273cefb8213dceba1b8e358531e43698"
        "c7e8e801fbc14b82d86b5104e42a5fae31f43befb5be68fa638388");
  CHECK(opened_text(counting_key(0x00), known_context(), sealed.envelope) == known_token);
}

TEST_CASE("the documented layout opens with libsodium primitives alone", "[crypto][envelope][kat]") {
  const crypto::bytes envelope = known_envelope().envelope;
  const std::uint8_t* p = envelope.data();
  REQUIRE(p[0] == 1);  // format
  REQUIRE(p[1] == 1);  // algorithm
  const std::size_t wrapped_size = (std::size_t{p[22]} << 8) | p[23];
  REQUIRE(wrapped_size == 72);
  const std::uint8_t* wrapped = p + 24;
  const std::uint8_t* commitment = wrapped + wrapped_size;
  const std::uint8_t* nonce = commitment + 32;
  const std::uint8_t* ciphertext = nonce + 24;
  const std::size_t ciphertext_size = envelope.size() - static_cast<std::size_t>(ciphertext - p);

  // The data key: XChaCha20-Poly1305 under the KEK with the data-key associated data.
  const secret kek = counting_key(0x00);
  const crypto::bytes key_aad = crypto::data_key_associated_data(known_context().tenant, 7, known_context().secret_id,
                                                                 crypto::secret_purpose::plaid_access_token);
  std::array<unsigned char, 32> data_key{};
  unsigned long long length = 0;
  REQUIRE(crypto_aead_xchacha20poly1305_ietf_decrypt(data_key.data(), &length, nullptr, wrapped + 24, 48,
                                                     key_aad.data(), key_aad.size(), wrapped, kek.reveal().data()) == 0);
  const secret expected_key = counting_key(0x40);
  CHECK(sodium_memcmp(data_key.data(), expected_key.reveal().data(), 32) == 0);

  // The commitment: BLAKE2b-256 keyed with the data key over label ‖ nonce ‖ payload AAD.
  const crypto::bytes aad = crypto::payload_associated_data(known_context());
  // Reserved up front: GCC 12 at -O2 misreads the growth of a vector built from the literal and
  // reports -Warray-bounds on the inserts (an error with BW_WERROR).
  constexpr std::string_view label = "bankworker/commit/v1";
  crypto::bytes message;
  message.reserve(label.size() + 24 + aad.size());
  message.insert(message.end(), label.begin(), label.end());
  message.insert(message.end(), nonce, nonce + 24);
  message.insert(message.end(), aad.begin(), aad.end());
  std::array<unsigned char, 32> tag{};
  crypto_generichash(tag.data(), tag.size(), message.data(), message.size(), data_key.data(), data_key.size());
  CHECK(std::equal(tag.begin(), tag.end(), commitment));

  // The payload.
  std::string plaintext(ciphertext_size - 16, '\0');
  REQUIRE(crypto_aead_xchacha20poly1305_ietf_decrypt(reinterpret_cast<unsigned char*>(plaintext.data()), &length,
                                                     nullptr, ciphertext, ciphertext_size, aad.data(), aad.size(),
                                                     nonce, data_key.data()) == 0);
  CHECK(plaintext == known_token);
}

TEST_CASE("flipping any single byte of an envelope makes opening fail", "[crypto][envelope]") {
  const secret kek = counting_key(0x00);
  const crypto::bytes envelope = known_envelope().envelope;
  for (std::size_t i = 0; i < envelope.size(); ++i) {
    for (const std::uint8_t mask : {0x01, 0x80, 0xff}) {
      crypto::bytes tampered = envelope;
      tampered[i] ^= mask;
      INFO("byte " << i << " xor " << int{mask});
      CHECK_THROWS_AS(opened_text(kek, known_context(), tampered), envelope_error);
    }
  }
}

TEST_CASE("a ciphertext moved to another row, purpose, subject, environment or tenant does not open",
          "[crypto][envelope]") {
  const secret kek = counting_key(0x00);
  const crypto::bytes envelope = known_envelope().envelope;
  crypto::secret_context moved = known_context();

  SECTION("another row") {
    moved.secret_id = id("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1e");
    CHECK(failure_of(kek, moved, envelope) == envelope_failure::authentication_failed);
  }
  SECTION("another purpose") {
    moved.purpose = crypto::secret_purpose::stripe_api_key;
    CHECK(failure_of(kek, moved, envelope) == envelope_failure::authentication_failed);
  }
  SECTION("another subject") {
    moved.subject_id = "c0ffee00-1234-4abc-9def-0123456789ac";
    CHECK(failure_of(kek, moved, envelope) == envelope_failure::authentication_failed);
  }
  SECTION("another Plaid environment") {
    moved.environment = "production";
    CHECK(failure_of(kek, moved, envelope) == envelope_failure::authentication_failed);
  }
  SECTION("another tenant is refused from the header, before any key is used") {
    moved.tenant = id("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f7");
    CHECK_THROWS_MATCHES(crypto::parse_envelope(envelope, moved.tenant), envelope_error,
                         Catch::Predicate<envelope_error>(
                             [](const envelope_error& e) { return e.failure() == envelope_failure::wrong_tenant; }));
  }
  SECTION("another tenant's header rewritten to match still fails under that tenant's key") {
    crypto::bytes rewritten = envelope;
    moved.tenant = id("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f7");
    std::copy(moved.tenant.bytes.begin(), moved.tenant.bytes.end(), rewritten.begin() + 2);
    const secret other_tenant_key = counting_key(0x20);
    CHECK(failure_of(other_tenant_key, moved, rewritten) == envelope_failure::authentication_failed);
    CHECK(failure_of(kek, moved, rewritten) == envelope_failure::authentication_failed);
  }
}

TEST_CASE("tenant A's key cannot open what was sealed under tenant B's", "[crypto][envelope]") {
  const secret key_a = secret::random(crypto::key_bytes);
  const secret key_b = secret::random(crypto::key_bytes);
  const crypto::secret_context context = known_context();
  const crypto::sealed_envelope sealed = crypto::seal_envelope(key_b, 1, context, known_token);
  CHECK(opened_text(key_b, context, sealed.envelope) == known_token);
  CHECK(failure_of(key_a, context, sealed.envelope) == envelope_failure::authentication_failed);
}

TEST_CASE("two seals of one plaintext share no bytes after the header", "[crypto][envelope]") {
  const secret kek = secret::random(crypto::key_bytes);
  const auto first = crypto::seal_envelope(kek, 1, known_context(), known_token);
  const auto second = crypto::seal_envelope(kek, 1, known_context(), known_token);
  CHECK(first.wrapped_data_key != second.wrapped_data_key);
  CHECK(std::search(first.envelope.begin(), first.envelope.end(), known_token.begin(), known_token.end()) ==
        first.envelope.end());
  const std::size_t body = crypto::envelope_fixed_header_bytes;
  CHECK(!std::equal(first.envelope.begin() + body, first.envelope.end(), second.envelope.begin() + body));
}

TEST_CASE("rewrapping changes the key version and wrapped key but never the payload", "[crypto][envelope]") {
  const secret old_kek = counting_key(0x00);
  const secret new_kek = secret::random(crypto::key_bytes);
  const crypto::secret_context context = known_context();
  const crypto::bytes before = known_envelope().envelope;
  const crypto::sealed_envelope after =
      crypto::rewrap_envelope(before, context.tenant, context.secret_id, context.purpose, old_kek, new_kek, 8);
  CHECK(after.kek_version == 8);
  const auto view = crypto::parse_envelope(after.envelope, context.tenant);
  CHECK(view.kek_version == 8);
  const std::size_t tail = 32 + 24 + known_token.size() + 16;  // commitment, nonce, ciphertext
  CHECK(std::equal(before.end() - static_cast<long>(tail), before.end(), after.envelope.end() - static_cast<long>(tail)));
  CHECK(opened_text(new_kek, context, after.envelope) == known_token);
  CHECK(failure_of(old_kek, context, after.envelope) == envelope_failure::authentication_failed);
}

TEST_CASE("envelope bounds are checked before anything is opened", "[crypto][envelope]") {
  const secret kek = secret::random(crypto::key_bytes);
  const crypto::secret_context context = known_context();
  SECTION("an envelope over envelope_bytes_max is refused unread") {
    const crypto::bytes huge(bankworker::limits::envelope_bytes_max + 1, 0x01);
    CHECK(failure_of(kek, context, huge) == envelope_failure::too_large);
  }
  SECTION("a truncated envelope is malformed") {
    crypto::bytes cut = known_envelope().envelope;
    cut.resize(crypto::envelope_overhead_bytes);
    CHECK(failure_of(kek, context, cut) == envelope_failure::malformed);
  }
  SECTION("an unknown format version is not guessed at") {
    crypto::bytes future = known_envelope().envelope;
    future[0] = 2;
    CHECK(failure_of(kek, context, future) == envelope_failure::unsupported_format);
  }
  SECTION("an empty or oversized plaintext is refused") {
    CHECK_THROWS_AS(crypto::seal_envelope(kek, 1, context, ""), envelope_error);
    const std::string big(bankworker::limits::sealed_plaintext_bytes_max + 1, 'x');
    CHECK_THROWS_AS(crypto::seal_envelope(kek, 1, context, big), envelope_error);
    const std::string largest(bankworker::limits::sealed_plaintext_bytes_max, 'x');
    const auto sealed = crypto::seal_envelope(kek, 1, context, largest);
    CHECK(sealed.envelope.size() <= bankworker::limits::envelope_bytes_max);
    CHECK(opened_text(kek, context, sealed.envelope) == largest);
  }
}

TEST_CASE("an algorithm-2 envelope opens only with its own shred key, however it is relabelled", "[crypto][envelope][shred]") {
  const secret kek = counting_key(0x00);
  const secret shred_key = secret::random(crypto::shred_key_bytes);
  const crypto::secret_context context = known_context();
  const auto sealed = crypto::seal_envelope(kek, 3, context, known_token, &shred_key);
  REQUIRE(sealed.envelope[1] == crypto::algorithm_xchacha20poly1305_blake2b_shred);
  const auto view = crypto::parse_envelope(sealed.envelope, context.tenant);
  CHECK(std::string(crypto::open_envelope(kek, context, view, &shred_key).reveal().text()) == known_token);

  SECTION("without a shred key nothing is tried") {
    try {
      crypto::open_envelope(kek, context, view);
      FAIL("opened without its shred key");
    } catch (const envelope_error& error) {
      CHECK(error.failure() == envelope_failure::shred_key_missing);
    }
  }
  SECTION("another secret's shred key does not open it") {
    const secret other = secret::random(crypto::shred_key_bytes);
    try {
      crypto::open_envelope(kek, context, view, &other);
      FAIL("opened with another shred key");
    } catch (const envelope_error& error) {
      CHECK(error.failure() == envelope_failure::authentication_failed);
    }
  }
  SECTION("relabelled as algorithm 1, the KEK alone does not open it") {
    crypto::bytes relabelled = sealed.envelope;
    relabelled[1] = crypto::algorithm_xchacha20poly1305_blake2b;
    CHECK(failure_of(kek, context, relabelled) == envelope_failure::authentication_failed);
  }
  SECTION("rewrapping keeps needing the same shred key") {
    const secret new_kek = counting_key(0x10);
    const auto rewrapped = crypto::rewrap_envelope(sealed.envelope, context.tenant, context.secret_id, context.purpose,
                                                   kek, new_kek, 4, &shred_key);
    const auto moved = crypto::parse_envelope(rewrapped.envelope, context.tenant);
    CHECK(std::string(crypto::open_envelope(new_kek, context, moved, &shred_key).reveal().text()) == known_token);
    CHECK_THROWS_AS(crypto::open_envelope(new_kek, context, moved), envelope_error);
    CHECK_THROWS_AS(crypto::rewrap_envelope(sealed.envelope, context.tenant, context.secret_id, context.purpose, kek,
                                            new_kek, 4),
                    envelope_error);
  }
}
