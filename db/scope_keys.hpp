#pragma once
// Scope keys (issue 23, DESIGN.md §4): the HMAC keys under which the customer's app mints the
// scope tokens that bankworker.enter_tenant verifies. The material lives in an owner-only table
// that neither the app nor the worker can read; the worker adds, lists and retires keys through
// the owner's functions of migration 0025. At most two are active at once (rotation).
//
// Adding or retiring a key changes who can read every tenant's rows, so each change is recorded
// in every tenant's audit chain, in the same transaction as the change.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/secret.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"

namespace bankworker::db {

inline constexpr std::size_t scope_key_bytes = 32;

struct scope_key_info {
  std::string key_id;
  std::string fingerprint;  // first 8 bytes of SHA-256 of the key, hex
  std::string created_at;
  std::optional<std::string> retired_at;
};

// A scope key file holds the key as 64 hex digits (a trailing newline allowed): the same text the
// app puts in its configuration. Returns the 32 bytes, or empty and `why` says what is wrong
// (never showing the content).
crypto::secret parse_scope_key(const crypto::secret& file_content, std::string& why);

// Adds a key under `key_id`; returns its fingerprint. Throws pqxx::sql_error with the database's
// reason (bad id, id used before, two keys active already).
std::string add_scope_key(pool& connections, const key_store& keys, std::string_view key_id,
                          const crypto::secret& key, std::string_view actor);

std::vector<scope_key_info> list_scope_keys(pool& connections);

// Retires the key (its material is erased; tokens under it are refused). False when no active
// key has that id.
bool retire_scope_key(pool& connections, const key_store& keys, std::string_view key_id, std::string_view actor);

}  // namespace bankworker::db
