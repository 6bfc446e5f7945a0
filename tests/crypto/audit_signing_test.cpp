// The audit chain's cryptography: canonical rows, chain hashes, signatures and checkpoints.
#include <catch2/catch.hpp>

#include <numeric>

#include "crypto/audit_signing.hpp"

using namespace bankworker;

namespace {

crypto::signing_key fixed_signing_key() {
  return crypto::signing_key(crypto::secret::filled(32, [](unsigned char* out) {
    std::iota(out, out + 32, 0x11);
    return true;
  }));
}

crypto::audit_row fixed_row() {
  return {.tenant = *core::uuid::parse("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6"),
          .seq = 1,
          .occurred_at_us = 1'795'000'000'000'000,
          .actor = "cli",
          .action = "tenant.created",
          .subject = "0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6",
          .details = R"({"kek_version": 1})",
          .signing_key_id = "ed25519:0000000000000000"};
}

}  // namespace

TEST_CASE("the chain hash and signature of a fixed row are the known ones", "[crypto][audit][kat]") {
  const crypto::audit_hash zero{};
  const crypto::audit_hash hash = crypto::chain_hash(zero, fixed_row());
  CHECK(crypto::to_hex(hash) == "077578e2444651ad1fe628305b4749944b2a497b450f543c9f9dedfcf8813c0a");
  const crypto::signing_key key = fixed_signing_key();
  CHECK(key.key_id() == "ed25519:b8a91e8fa44b9530");
  CHECK(crypto::to_hex(key.sign(hash)) ==
        "5571a18f4e6e26cca6d0cd603422a8b86fe6bf87b166ff3e3bac6418553c4b4a9a88e60361f58e5009e48d4ab6424366"
        "ed3d26138e8740501eefc8f9dd8c9806");
}

TEST_CASE("every field of a row changes its hash", "[crypto][audit]") {
  const crypto::audit_hash zero{};
  const crypto::audit_hash base = crypto::chain_hash(zero, fixed_row());
  std::vector<crypto::audit_row> variants(8, fixed_row());
  variants[0].tenant.bytes[0] ^= 1;
  variants[1].seq = 2;
  variants[2].occurred_at_us += 1;
  variants[3].actor = "worker";
  variants[4].action = "tenant.deleted";
  variants[5].subject += "x";
  variants[6].details = R"({"kek_version": 2})";
  variants[7].signing_key_id = "ed25519:0000000000000001";
  for (const auto& variant : variants) CHECK(crypto::chain_hash(zero, variant) != base);
  crypto::audit_hash other_prev{};
  other_prev[31] = 1;
  CHECK(crypto::chain_hash(other_prev, fixed_row()) != base);
  // Length prefixes: moving a byte from one field to the next changes the encoding.
  crypto::audit_row shifted = fixed_row();
  shifted.actor = "cl";
  shifted.action = "itenant.created";
  CHECK(crypto::chain_hash(zero, shifted) != base);
}

TEST_CASE("a checkpoint verifies with the public key and fails when any line changes", "[crypto][audit]") {
  const crypto::signing_key key = fixed_signing_key();
  const crypto::audit_checkpoint checkpoint{.tenant = fixed_row().tenant,
                                            .size = 42,
                                            .head = crypto::chain_hash(crypto::audit_hash{}, fixed_row()),
                                            .time = "2026-11-22T01:00:00Z",
                                            .key_id = key.key_id()};
  const std::string text = crypto::format_checkpoint(checkpoint, key);
  CHECK(text.starts_with("bankworker-audit-checkpoint v1\ntenant 0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6\nsize 42\n"));
  const auto verified = crypto::verify_checkpoint(text, key.verification_key());
  REQUIRE(verified.has_value());
  CHECK(verified->size == 42);
  CHECK(verified->head == checkpoint.head);

  std::string forged = text;
  forged.replace(forged.find("size 42"), 7, "size 41");
  CHECK_FALSE(crypto::verify_checkpoint(forged, key.verification_key()).has_value());
  const crypto::signing_key stranger = crypto::signing_key::generate();
  CHECK_FALSE(crypto::verify_checkpoint(text, stranger.verification_key()).has_value());
}

TEST_CASE("the public key prints as an Ed25519 PEM block", "[crypto][audit]") {
  const std::string pem = crypto::public_key_pem(fixed_signing_key().verification_key());
  CHECK(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
  CHECK(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
}
