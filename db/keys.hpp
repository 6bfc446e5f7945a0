#pragma once
// The tenant key hierarchy in the database (DESIGN.md §5): per-tenant key-encryption key versions
// wrapped by the root key (bankworker.tenant_keys), sealed secrets (bankworker.sealed_secrets),
// rotation, rewrap, retirement, shredding, destruction, and the audit signing key.
//
// The cryptography lives in crypto/ (envelope.hpp, root_key.hpp); this file holds the SQL and the
// transactions. Every state change appends its audit row in the same transaction (db/audit.hpp).
// Functions taking a pqxx::work run inside the caller's tenant-scoped transaction (with_tenant);
// functions taking the pool open their own, short ones.
//
// Thread-safe: one key_store serves every thread of the process.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "crypto/audit_signing.hpp"
#include "crypto/envelope.hpp"
#include "crypto/key_cache.hpp"
#include "crypto/root_key.hpp"
#include "crypto/secret.hpp"
#include "db/pool.hpp"

namespace bankworker::db {

struct key_store_settings {
  crypto::key_cache_settings cache{};
  // Rows per `keys rewrap` transaction: small enough that a batch holds its row locks briefly.
  std::size_t rewrap_batch_rows = 500;
};

// Why a sealed secret or a tenant key cannot be used.
enum class key_failure {
  // No sealed secret with that id for this tenant: never sealed, or shredded. Needs user action
  // (link the account again); retrying cannot help.
  secret_not_found,
  // The tenant has no usable key of the version a row needs, or no primary key at all: its keys
  // were destroyed (offboarding) or the row is corrupt. Permanent for this row.
  key_unavailable,
  // The row's columns disagree with its envelope header (kek_version, wrapped data key): the row
  // was edited outside bankworker. Permanent; a security event.
  row_inconsistent,
};

class key_error : public std::runtime_error {
 public:
  key_error(key_failure failure, const std::string& message) : std::runtime_error(message), failure_(failure) {}
  key_failure failure() const noexcept { return failure_; }

 private:
  key_failure failure_;
};

struct key_version_status {
  std::uint32_t version = 0;
  std::string state;
  std::string root_key_id;
  std::int64_t secrets = 0;  // sealed secrets that need this version
  // Of those, legacy algorithm-1 rows (no shred key: a copy taken before their shred keeps opening
  // while this version lives). `keys rewrap` reseals them.
  std::int64_t legacy_secrets = 0;
};

struct rewrap_report {
  std::uint32_t primary_version = 0;
  std::size_t resealed = 0;                // legacy algorithm-1 rows sealed again under algorithm 2
  std::size_t rewrapped = 0;
  std::size_t batches = 0;
  std::size_t remaining = 0;               // rows still under another version (locked by someone else)
  // Legacy rows still of algorithm 1 afterwards: locked by someone else, or a Plaid token whose
  // connection row is gone (its environment, bound into the associated data, is unknown).
  std::size_t legacy_remaining = 0;
  std::vector<std::uint32_t> retired;      // versions retired because nothing needed them any more
};

class key_store {
 public:
  key_store(crypto::root_key_ring roots, key_store_settings settings = {},
            crypto::key_cache::clock_function clock = {});

  // Loads the active audit signing key, creating it (in its own transaction) if the database has
  // none yet. Idempotent; every function below that appends audit rows needs it to have run.
  // Functions taking the pool call it themselves.
  void prepare(pool& connections);
  // The audit signing key loaded by prepare().
  const crypto::signing_key& signing() const;
  // Every signing key in the database, each checked against its wrapped seed (so a swapped public
  // key is caught): for `audit verify`. Throws crypto::root_key_error.
  std::vector<crypto::signing_key> verification_keys(pqxx::transaction_base& tx) const;

  // Creates version 1 of a new tenant's key (ledger::create_tenant calls it).
  std::uint32_t create_tenant_key(pqxx::work& tx, const core::uuid& tenant);
  // Adds a new primary version; the old primary stays able to open (decrypt-only).
  std::uint32_t rotate_tenant_key(pqxx::work& tx, const core::uuid& tenant, std::string_view actor);

  // Seals `plaintext` as row context.secret_id (which must be new) under the primary version.
  void seal_secret(pqxx::work& tx, const crypto::secret_context& context, const crypto::secret& plaintext,
                   std::string_view actor);
  // Opens row context.secret_id. Throws key_error, crypto::envelope_error, crypto::root_key_error.
  crypto::secret open_secret(pqxx::work& tx, const crypto::secret_context& context);
  // Crypto-shredding of one secret: deletes its row (wrapped data key and ciphertext) and audits
  // it in the caller's transaction. False when there was no such row.
  bool shred_secret(pqxx::work& tx, const core::uuid& tenant, const core::uuid& secret_id, std::string_view actor);

  // Reseals the tenant's legacy algorithm-1 rows under algorithm 2 and its primary version
  // (reseal_legacy_batch), then rewraps the other data keys to its primary version in batches of
  // rewrap_batch_rows, each batch its own transaction (online: openers see either the old or the
  // new row, and both open; resumable: a crash loses at most one uncommitted batch). Only legacy
  // payloads are decrypted, once each, in guarded memory. Then retires every non-primary version
  // no row needs any more.
  // `batch_rows` 0 means settings.rewrap_batch_rows.
  rewrap_report rewrap_tenant(pool& connections, const core::uuid& tenant, std::string_view actor,
                              std::size_t batch_rows = 0);
  // One batch of the above; returns how many rows it rewrapped (0: nothing left it could lock).
  std::size_t rewrap_batch(pool& connections, const core::uuid& tenant, std::string_view actor,
                           std::size_t batch_rows = 0);
  // Gives the tenant a new primary version and moves every secret to it (rotate_tenant_key in its
  // own transaction, then rewrap_tenant), so the old versions retire and their wrapped keys are
  // erased once nothing needs them: `keys rotate --root --new-tenant-keys`. Not idempotent: a
  // re-run adds one more version (harmless, the rewrap moves everything again).
  rewrap_report replace_tenant_key(pool& connections, const core::uuid& tenant, std::string_view actor,
                                   std::size_t batch_rows = 0);
  // One batch of legacy rows: each is opened with its KEK (algorithm 1), and sealed again with a
  // fresh data key, a fresh shred key (its own row) and the same associated data (purpose, tenant,
  // row, subject, environment) under the primary version, so its shred destroys a key from now on.
  // Returns how many rows it resealed (0: nothing left it could lock).
  std::size_t reseal_legacy_batch(pool& connections, const core::uuid& tenant, std::string_view actor,
                                  std::size_t batch_rows = 0);
  // Retires the tenant's active versions that no sealed secret needs; returns them.
  std::vector<std::uint32_t> retire_unused_versions(pool& connections, const core::uuid& tenant,
                                                    std::string_view actor);

  // Rewraps the tenant's key versions still wrapped by another root key under the ring's primary
  // root key, auditing it in `tx`. Returns how many versions it rewrapped (0 when re-run).
  std::size_t rewrap_tenant_keys_to_primary_root(pqxx::work& tx, const core::uuid& tenant, std::string_view actor);
  // The same for the audit signing seeds (not tenant data: its own transaction, no audit row).
  std::size_t rewrap_signing_keys_to_primary_root(pool& connections);

  // Tenant offboarding: shreds every sealed secret, erases every key version (metadata stays,
  // state 'destroyed'), marks the tenant offboarded, and audits it, in the caller's transaction.
  // Irreversible. Returns how many secrets were shredded.
  std::size_t destroy_tenant_keys(pqxx::work& tx, const core::uuid& tenant, std::string_view actor);

  const crypto::root_key_ring& roots() const noexcept { return roots_; }
  crypto::key_cache& cache() noexcept { return cache_; }

 private:
  std::shared_ptr<const crypto::secret> unwrap_tenant_key(const core::uuid& tenant, std::uint32_t version,
                                                          const std::string& root_key_id,
                                                          const pqxx::binarystring& wrapped);

  template <typename MoveRows>
  std::size_t move_batch(pool& connections, const core::uuid& tenant, std::string_view actor, std::size_t batch_rows,
                         std::string_view action, MoveRows move_rows);
  struct resealed_row;
  resealed_row reseal_legacy_row(const core::uuid& tenant, const pqxx::row& row, const crypto::secret& new_kek,
                                 std::uint32_t new_version);

  crypto::root_key_ring roots_;
  const key_store_settings settings_;
  crypto::key_cache cache_;
  std::mutex signing_mutex_;
  std::unique_ptr<crypto::signing_key> signing_;  // set once by prepare(), then read-only
  std::atomic<bool> prepared_{false};
};

// The tenant's key versions and how many secrets need each (`keys status`). Needs no root key.
std::vector<key_version_status> key_status(pqxx::transaction_base& tx, const core::uuid& tenant);

// All tenant ids, through bankworker.tenant_ids() (the worker cannot list tenants otherwise).
std::vector<core::uuid> list_tenants(pool& connections);

}  // namespace bankworker::db
