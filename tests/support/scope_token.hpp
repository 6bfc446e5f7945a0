#pragma once
// Scope tokens as the customer's app mints them (README: "Tenant scope for the app"), for tests
// that act as the app: HMAC-SHA256 under a 32-byte scope key over
// "bankworker-scope-v1.<key id>.<tenant>.<expiry>", sent as "v1.<key id>.<tenant>.<expiry>.<hex MAC>".

#include <array>
#include <cstdint>
#include <string>

#include <pqxx/pqxx>

namespace bankworker::test {

struct scope_key {
  std::string id;
  std::array<unsigned char, 32> bytes{};

  // A random key under `id`.
  static scope_key random(std::string id);
  std::string hex() const;
};

// Seconds since the epoch, now.
std::int64_t unix_now();

// A token for `tenant` (its text as the database prints uuids) that expires at `expires_unix`.
std::string mint_scope_token(const scope_key& key, const std::string& tenant, std::int64_t expires_unix);

// Adds `key` as an active scope key, through the owner's function (as the admin, in `tx`).
void add_scope_key(pqxx::transaction_base& tx, const scope_key& key);

}  // namespace bankworker::test
