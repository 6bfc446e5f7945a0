#pragma once
// The cryptography of the audit chain (DESIGN.md §4): the canonical encoding of a row, the chain
// hash, Ed25519 signatures and signed checkpoints. No SQL: db/audit.cpp stores and reads rows.
//
//   hash      = BLAKE2b-256(prev_hash ‖ canonical_audit_row(row))    (prev_hash of seq 1: 32 zero bytes)
//   signature = Ed25519(signing key, hash)
//
// The signing key is separate from every encryption key: an Ed25519 key pair whose 32-byte seed
// is random and stored wrapped by the root key (see crypto/README.md).

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/uuid.hpp"
#include "crypto/envelope.hpp"
#include "crypto/secret.hpp"

namespace bankworker::crypto {

inline constexpr std::size_t audit_hash_bytes = 32;
inline constexpr std::size_t signature_bytes = 64;
inline constexpr std::size_t public_key_bytes = 32;
inline constexpr std::size_t signing_seed_bytes = 32;

using audit_hash = std::array<std::uint8_t, audit_hash_bytes>;
using public_key = std::array<std::uint8_t, public_key_bytes>;
using signature = std::array<std::uint8_t, signature_bytes>;

struct audit_row {
  core::uuid tenant;
  std::int64_t seq = 0;
  std::int64_t occurred_at_us = 0;  // microseconds since the Unix epoch, UTC
  std::string actor;
  std::string action;
  std::string subject;
  std::string details;  // the details document exactly as PostgreSQL prints the jsonb
  std::string signing_key_id;
};

// "bankworker/audit-row/v1" then tenant (16 bytes), seq (8, big-endian), occurred_at_us (8,
// big-endian, two's complement), actor, action, subject, details, signing_key_id; every field
// 4-byte-length-prefixed.
bytes canonical_audit_row(const audit_row& row);
audit_hash chain_hash(std::span<const std::uint8_t, audit_hash_bytes> prev_hash, const audit_row& row);

// "ed25519:" + the first 8 bytes of BLAKE2b-256(public key), in hex.
std::string signing_key_id_of(const public_key& key);

class signing_key {
 public:
  // Derives the key pair from a 32-byte seed (kept, with the secret key, in guarded memory).
  explicit signing_key(secret seed);
  static signing_key generate();

  const std::string& key_id() const noexcept { return key_id_; }
  const public_key& verification_key() const noexcept { return public_key_; }
  const secret& seed() const noexcept { return seed_; }
  signature sign(std::span<const std::uint8_t> message) const;

 private:
  secret seed_;
  secret secret_key_;  // libsodium's 64-byte form (seed ‖ public key)
  public_key public_key_{};
  std::string key_id_;
};

bool verify_signature(const public_key& key, std::span<const std::uint8_t> message, const signature& sig) noexcept;

// The verification key as a PEM SubjectPublicKeyInfo block, which `openssl pkeyutl -verify` and
// other Ed25519 tools read.
std::string public_key_pem(const public_key& key);

std::string to_base64(std::span<const std::uint8_t> data);
std::optional<bytes> from_base64(std::string_view text);
std::optional<bytes> from_hex(std::string_view text);

// A signed statement of one tenant's chain: its size (the seq of its last row) and head hash.
// Text format (crypto/README.md), lines ending in "\n":
//   bankworker-audit-checkpoint v1
//   tenant <uuid>
//   size <seq>
//   head <64 hex digits>
//   time <YYYY-MM-DDTHH:MM:SSZ>
//   key <signing key id>
//   signature <base64 Ed25519 signature over every preceding line, newlines included>
struct audit_checkpoint {
  core::uuid tenant;
  std::int64_t size = 0;
  audit_hash head{};
  std::string time;
  std::string key_id;
};
std::string checkpoint_body(const audit_checkpoint& checkpoint);
std::string format_checkpoint(const audit_checkpoint& checkpoint, const signing_key& key);
// Parses one checkpoint and checks its signature with `key`; nullopt when malformed or forged.
std::optional<audit_checkpoint> verify_checkpoint(std::string_view text, const public_key& key);

}  // namespace bankworker::crypto
