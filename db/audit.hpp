#pragma once
// The audit chain in the database (DESIGN.md §4): appending a row in the caller's transaction,
// verifying a tenant's chain, and signed checkpoints. The encoding, hash and signature are in
// crypto/audit_signing.hpp.
//
// Appending locks the tenant's head (bankworker.audit_heads, FOR UPDATE) so that the sequence is
// gapless and the chain linear even with concurrent writers; the lock is held until the caller's
// transaction ends, so keep audited transactions short.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "crypto/audit_signing.hpp"
#include "db/keys.hpp"

namespace bankworker::db {

struct audit_event {
  core::uuid tenant;
  std::string_view actor;    // "cli", "worker", …
  std::string_view action;   // "tenant.created", "secret.sealed", "key.rotated", …
  std::string_view subject;  // the id of what changed
  // A JSON object of ids and keyed hashes only, never a secret; at most audit_details_bytes_max.
  std::string details = "{}";
};

struct audit_entry {
  std::int64_t seq = 0;
  crypto::audit_hash hash{};
};

// Microseconds since the epoch from the system clock (the default time source of appends).
std::int64_t now_us();

// Appends one row to the tenant's chain in `tx` (which must be scoped to event.tenant), signed
// with keys.signing(). `occurred_at_us` comes from the caller so tests can fix it.
audit_entry append_audit(pqxx::work& tx, const key_store& keys, const audit_event& event,
                         std::int64_t occurred_at_us = now_us());

// Appends one row to every tenant's chain in `tx` (not scoped to a tenant: it scopes itself to
// each in turn and leaves no tenant set), for a change that concerns every tenant alike (a scope
// key, a declared currency). `event.tenant` is ignored. Returns how many rows were appended.
std::size_t append_audit_every_tenant(pqxx::work& tx, const key_store& keys, const audit_event& event);

// The first problem `audit verify` found in a tenant's chain; empty when the chain is honest.
struct audit_break {
  std::int64_t seq = 0;  // the first row that does not verify (or the first missing one)
  std::string reason;
};

struct audit_verification {
  core::uuid tenant;
  std::int64_t rows = 0;
  crypto::audit_hash head{};
  std::optional<audit_break> broken;
};

// Recomputes every hash and signature of the tenant's chain in order, checks that sequence numbers
// are gapless from 1 and that the chain ends at the recorded head. Reads in pages of
// audit_verify_page_rows within one repeatable-read snapshot.
audit_verification verify_audit_chain(pool& connections, const key_store& keys, const core::uuid& tenant);

// A signed checkpoint (crypto/audit_signing.hpp has the format) of a chain that verified: only a
// verified head is ever signed.
std::string audit_checkpoint_text(const key_store& keys, const audit_verification& verified, std::string_view time_utc);

}  // namespace bankworker::db
