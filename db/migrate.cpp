#include "db/migrate.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>


#include <pqxx/pqxx>

#include "core/limits.hpp"

namespace bankworker::db {

namespace {

// Creates what is needed to record migrations. The first migration hands both to bankworker_owner.
constexpr const char* bootstrap_sql = R"sql(
CREATE SCHEMA IF NOT EXISTS bankworker;
CREATE TABLE IF NOT EXISTS bankworker.schema_migrations (
  name text PRIMARY KEY CHECK (name ~ '^[0-9]{4}_[a-z0-9_]+\.sql$'),
  checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
  applied_at timestamptz NOT NULL DEFAULT now()
))sql";

// Serialises migrators of one database; released with the transaction that took it.
constexpr const char* lock_sql = "SELECT pg_advisory_xact_lock(7161541209186611051)";
constexpr const char* migrations_table_exists_sql =
    "SELECT to_regclass('bankworker.schema_migrations') IS NOT NULL";
constexpr const char* select_applied_sql = "SELECT name, checksum FROM bankworker.schema_migrations";
constexpr const char* record_sql = "INSERT INTO bankworker.schema_migrations (name, checksum) VALUES ($1, $2)";
// A migration may SET LOCAL ROLE; recording it is the migrator's own business.
constexpr const char* reset_role_sql = "RESET ROLE";

constexpr std::size_t checksum_shown_chars = 12;

bool is_valid_name(std::string_view name) noexcept {
  constexpr std::string_view suffix = ".sql";
  if (name.size() < 4 + 1 + 1 + suffix.size() || !name.ends_with(suffix)) return false;
  for (std::size_t i = 0; i < 4; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  if (name[4] != '_') return false;
  for (const char c : name.substr(5, name.size() - 5 - suffix.size())) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

void check_list(std::span<const migration> migrations) {
  if (migrations.size() > limits::migrations_max) {
    throw migration_error("more than migrations_max (" + std::to_string(limits::migrations_max) + ") migrations");
  }
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    const migration& m = migrations[i];
    if (!is_valid_name(m.name)) {
      throw migration_error("migration " + std::string(m.name) + ": name must look like NNNN_name.sql");
    }
    if (m.sql.size() > limits::migration_bytes_max) {
      throw migration_error("migration " + std::string(m.name) + ": larger than migration_bytes_max");
    }
    if (i > 0 && !(migrations[i - 1].name < m.name)) {
      throw migration_error("migration " + std::string(m.name) + ": not in strictly increasing order after " +
                            std::string(migrations[i - 1].name));
    }
  }
}

using applied_map = std::map<std::string, std::string, std::less<>>;

applied_map read_applied(pqxx::transaction_base& tx) {
  applied_map applied;
  if (!tx.exec1(migrations_table_exists_sql)[0].as<bool>()) return applied;
  for (const auto& row : tx.exec(select_applied_sql)) {
    applied.emplace(row[0].as<std::string>(), row[1].as<std::string>());
  }
  return applied;
}

std::vector<std::string> checksums_of(std::span<const migration> migrations) {
  std::vector<std::string> checksums;
  checksums.reserve(migrations.size());
  for (const migration& m : migrations) checksums.push_back(migration_checksum(m.sql));
  return checksums;
}

// Refuses a database that disagrees with the binary; returns the names still to apply, in order.
// `checksums[i]` is migration_checksum(migrations[i].sql).
std::vector<std::string> compare(const applied_map& applied, std::span<const migration> migrations,
                                 std::span<const std::string> checksums) {
  for (const auto& [name, checksum] : applied) {
    const auto known = std::find_if(migrations.begin(), migrations.end(),
                                    [&](const migration& m) { return m.name == name; });
    if (known == migrations.end()) {
      throw migration_error("migration " + name +
                            " is applied to the database but unknown to this binary (is a newer bankworker deployed?)");
    }
    const std::string& expected = checksums[static_cast<std::size_t>(known - migrations.begin())];
    if (expected != checksum) {
      throw migration_error("migration " + name + " was edited after it was applied (database has sha256 " +
                            checksum.substr(0, checksum_shown_chars) + "…, file has " +
                            expected.substr(0, checksum_shown_chars) + "…); restore it and add a new migration instead");
    }
  }
  std::vector<std::string> pending;
  const std::string newest_applied = applied.empty() ? std::string() : applied.rbegin()->first;
  for (const migration& m : migrations) {
    if (applied.contains(m.name)) continue;
    if (!newest_applied.empty() && m.name < newest_applied) {
      throw migration_error("migration " + std::string(m.name) + " is older than the applied " + newest_applied +
                            "; migrations must be added after the newest one");
    }
    pending.emplace_back(m.name);
  }
  return pending;
}

}  // namespace

std::string migration_checksum(std::string_view sql) {
  std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(sql.data()), sql.size());
  std::array<char, crypto_hash_sha256_BYTES * 2 + 1> hex{};
  sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
  return std::string(hex.data(), crypto_hash_sha256_BYTES * 2);
}

migration_report apply_migrations(pqxx::connection& connection, std::span<const migration> migrations) {
  check_list(migrations);
  {
    pqxx::work tx(connection, "bankworker_migrate_bootstrap");
    tx.exec(lock_sql);
    tx.exec(bootstrap_sql);
    tx.commit();
  }

  const std::vector<std::string> checksums = checksums_of(migrations);
  migration_report report;
  bool first_round = true;
  // One migration per transaction; each round re-reads what is applied under the lock, so two
  // migrators racing on one database apply every migration exactly once.
  for (std::size_t round = 0; round <= migrations.size(); ++round) {
    pqxx::work tx(connection, "bankworker_migrate");
    tx.exec(lock_sql);
    const applied_map applied = read_applied(tx);
    const std::vector<std::string> pending = compare(applied, migrations, checksums);
    if (first_round) {
      report.already_applied = applied.size();
      first_round = false;
    }
    if (pending.empty()) {
      tx.commit();
      return report;
    }
    const auto next = std::find_if(migrations.begin(), migrations.end(),
                                   [&](const migration& m) { return m.name == pending.front(); });
    try {
      tx.exec(std::string(next->sql));
      tx.exec(reset_role_sql);
      tx.exec_params(record_sql, std::string(next->name),
                     checksums[static_cast<std::size_t>(next - migrations.begin())]);
      tx.commit();
    } catch (const pqxx::sql_error& error) {
      throw migration_error("migration " + std::string(next->name) + " failed and was rolled back: " + error.what());
    }
    report.applied.emplace_back(next->name);
  }
  throw migration_error("migrations did not converge after one round per migration");
}

std::vector<std::string> pending_migrations(pqxx::connection& connection, std::span<const migration> migrations) {
  check_list(migrations);
  pqxx::read_transaction tx(connection, "bankworker_migrations_check");
  return compare(read_applied(tx), migrations, checksums_of(migrations));
}

schema_check::schema_check(std::span<const migration> migrations)
    : migrations_(migrations), checksums_(checksums_of(migrations)) {
  check_list(migrations_);
}

std::vector<std::string> schema_check::pending(pqxx::connection& connection) const {
  applied_map applied;
  pqxx::nontransaction tx(connection, "bankworker_schema_check");
  try {
    for (const auto& row : tx.exec(select_applied_sql)) {
      applied.emplace(row[0].as<std::string>(), row[1].as<std::string>());
    }
  } catch (const pqxx::undefined_table&) {
    // No migration was ever applied here: every one is pending.
  }
  return compare(applied, migrations_, checksums_);
}

}  // namespace bankworker::db
