#pragma once
// Schema migrations: db/migrations/NNNN_name.sql, applied in order, each in one transaction, and
// recorded with the SHA-256 of its text in bankworker.schema_migrations. Re-running is a no-op.
// An applied migration whose text changed, or one this binary does not know, is refused before
// anything is applied: the database and the binary disagree and a person must decide.

#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection>

namespace bankworker::db {

struct migration {
  std::string_view name;  // NNNN_name.sql
  std::string_view sql;
};

// The migrations compiled into this binary, in order.
std::span<const migration> embedded_migrations() noexcept;

// The migrations cannot be applied as they stand (edited, unknown, misnamed or out of order).
// Retrying does not help; the message names the migration and what is wrong.
class migration_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct migration_report {
  std::vector<std::string> applied;  // names applied by this run, in order
  std::size_t already_applied = 0;
};

// SHA-256 of a migration's text, lowercase hex.
std::string migration_checksum(std::string_view sql);

// Applies what is missing. Concurrent callers on one database are serialised by an advisory lock.
// Migrations run as the connection's user (the first one creates the roles; later ones switch to
// bankworker_owner themselves with SET LOCAL ROLE).
migration_report apply_migrations(pqxx::connection& connection, std::span<const migration> migrations);

// Names of migrations not yet applied (empty when the schema is current). Also refuses edited or
// unknown applied migrations, so `run` can refuse an older or foreign schema at start-up.
std::vector<std::string> pending_migrations(pqxx::connection& connection,
                                            std::span<const migration> migrations);

// The same check for a caller that asks often (/readyz): the migrations' checksums are computed
// once, here, and each check is one autocommit statement, one round trip. `migrations` must
// outlive the check (embedded_migrations() does).
class schema_check {
 public:
  explicit schema_check(std::span<const migration> migrations);
  // As pending_migrations.
  std::vector<std::string> pending(pqxx::connection& connection) const;

 private:
  std::span<const migration> migrations_;
  std::vector<std::string> checksums_;
};

}  // namespace bankworker::db
