#include "db/audit.hpp"

#include <algorithm>
#include <chrono>

#include "core/assert.hpp"
#include "core/limits.hpp"
#include "db/statement.hpp"
#include "db/tenant_scope.hpp"

namespace bankworker::db {

namespace {

// Locks the tenant's head and, in the same round trip, has PostgreSQL print the details the way
// it will store them (jsonb normalises spacing and key order), so the hash covers exactly what
// `audit verify` will read back.
constexpr statement lock_head_sql{"audit_lock_head",
    "SELECT seq, hash, $2::jsonb::text FROM bankworker.audit_heads WHERE tenant_id = $1 FOR UPDATE"};
constexpr statement create_head_sql{"audit_create_head",
    "INSERT INTO bankworker.audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant_id) DO NOTHING"};
// The row and the new head in one statement.
constexpr statement append_row_sql{"audit_append_row",
    "WITH appended AS ("
    " INSERT INTO bankworker.audit_log (tenant_id, seq, occurred_at, actor, action, subject, details, prev_hash, hash,"
    " signature, signing_key_id) VALUES ($1, $2, 'epoch'::timestamptz + $3::bigint * interval '1 microsecond',"
    " $4, $5, $6, $7::jsonb, $8, $9, $10, $11) RETURNING tenant_id)"
    " UPDATE bankworker.audit_heads h SET seq = $2, hash = $9 FROM appended WHERE h.tenant_id = appended.tenant_id"};
constexpr const char* read_head_sql = "SELECT seq, hash FROM bankworker.audit_heads WHERE tenant_id = $1";
// extract(epoch …) is numeric in PostgreSQL 14 and later, so microseconds come back exactly.
constexpr const char* read_chain_page_sql =
    "SELECT seq, (extract(epoch FROM occurred_at) * 1000000)::bigint, actor, action, subject, details::text,"
    " prev_hash, hash, signature, signing_key_id FROM bankworker.audit_log"
    " WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

std::span<const std::uint8_t> span_of(const pqxx::binarystring& data) {
  return {reinterpret_cast<const std::uint8_t*>(data.data()), data.size()};
}

bool equal_bytes(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::size_t append_audit_every_tenant(pqxx::work& tx, const key_store& keys, const audit_event& event) {
  constexpr const char* tenants_sql = "SELECT * FROM bankworker.tenant_ids() LIMIT $1";
  constexpr const char* scope_to_sql = "SELECT set_config('bankworker.tenant_id', $1, true)";
  std::size_t appended = 0;
  for (const auto& row : tx.exec_params(tenants_sql, limits::tenants_per_command_max)) {
    const auto tenant = core::uuid::parse(row[0].c_str());
    if (!tenant) continue;  // the column is uuid: every value parses
    tx.exec_params(scope_to_sql, tenant->to_string());
    audit_event each = event;
    each.tenant = *tenant;
    append_audit(tx, keys, each);
    ++appended;
  }
  tx.exec_params(scope_to_sql, "");
  return appended;
}

audit_entry append_audit(pqxx::work& tx, const key_store& keys, const audit_event& event, std::int64_t occurred_at_us) {
  BW_INVARIANT(event.details.size() <= limits::audit_details_bytes_max);
  BW_ASSERT(!event.action.empty());
  const crypto::signing_key& signer = keys.signing();
  const std::string tenant_text = event.tenant.to_string();
  const crypto::audit_hash zero{};

  pqxx::result head = exec_statement(tx, lock_head_sql, tenant_text, event.details);
  if (head.empty()) {
    exec_statement(tx, create_head_sql, tenant_text, pqxx::binarystring(zero.data(), zero.size()));
    head = exec_statement(tx, lock_head_sql, tenant_text, event.details);
  }
  BW_INVARIANT(head.size() == 1);
  const std::int64_t last_seq = head[0][0].as<std::int64_t>();
  const pqxx::binarystring prev(head[0][1]);
  BW_INVARIANT(prev.size() == crypto::audit_hash_bytes);
  crypto::audit_hash prev_hash{};
  std::copy_n(span_of(prev).begin(), prev_hash.size(), prev_hash.begin());

  crypto::audit_row row{.tenant = event.tenant,
                        .seq = last_seq + 1,
                        .occurred_at_us = occurred_at_us,
                        .actor = std::string(event.actor),
                        .action = std::string(event.action),
                        .subject = std::string(event.subject),
                        .details = head[0][2].as<std::string>(),
                        .signing_key_id = signer.key_id()};
  const crypto::audit_hash hash = crypto::chain_hash(prev_hash, row);
  const crypto::signature sig = signer.sign(hash);
  const pqxx::result updated =
      exec_statement(tx, append_row_sql, tenant_text, row.seq, row.occurred_at_us, row.actor, row.action, row.subject,
                     row.details, pqxx::binarystring(prev_hash.data(), prev_hash.size()),
                     pqxx::binarystring(hash.data(), hash.size()), pqxx::binarystring(sig.data(), sig.size()),
                     row.signing_key_id);
  BW_INVARIANT(updated.affected_rows() == 1);
  return {row.seq, hash};
}

namespace {

// Checks one stored row against the chain so far: its place, its link to the previous row, its
// hash and its signature. Returns why it breaks the chain, or nothing (then `hash` is its hash).
std::optional<audit_break> check_chain_row(const pqxx::row& r, const core::uuid& tenant, std::int64_t expected_seq,
                                           const crypto::audit_hash& prev,
                                           const std::vector<crypto::signing_key>& signers, crypto::audit_hash& hash) {
  const crypto::audit_row row{.tenant = tenant,
                              .seq = r[0].as<std::int64_t>(),
                              .occurred_at_us = r[1].as<std::int64_t>(),
                              .actor = r[2].as<std::string>(),
                              .action = r[3].as<std::string>(),
                              .subject = r[4].as<std::string>(),
                              .details = r[5].as<std::string>(),
                              .signing_key_id = r[9].as<std::string>()};
  if (row.seq != expected_seq) {
    return audit_break{expected_seq, "row " + std::to_string(expected_seq) + " is missing (next row is " +
                                         std::to_string(row.seq) + ")"};
  }
  const pqxx::binarystring stored_prev(r[6]);
  const pqxx::binarystring stored_hash(r[7]);
  const pqxx::binarystring stored_sig(r[8]);
  if (!equal_bytes(span_of(stored_prev), prev)) {
    return audit_break{row.seq, "prev_hash does not match the hash of row " + std::to_string(row.seq - 1)};
  }
  hash = crypto::chain_hash(prev, row);
  if (!equal_bytes(span_of(stored_hash), hash)) return audit_break{row.seq, "hash does not match the row's content"};
  const auto signer = std::find_if(signers.begin(), signers.end(),
                                   [&](const crypto::signing_key& key) { return key.key_id() == row.signing_key_id; });
  if (signer == signers.end()) return audit_break{row.seq, "signed by unknown key " + row.signing_key_id};
  crypto::signature sig{};
  if (stored_sig.size() != sig.size()) return audit_break{row.seq, "signature has the wrong length"};
  std::copy_n(span_of(stored_sig).begin(), sig.size(), sig.begin());
  if (!crypto::verify_signature(signer->verification_key(), hash, sig)) {
    return audit_break{row.seq, "signature does not verify"};
  }
  return std::nullopt;
}

// The chain must end exactly at the recorded head: rows cut off the end are caught here.
std::optional<audit_break> check_chain_head(pqxx::transaction_base& tx, const std::string& tenant_text,
                                            std::int64_t rows, const crypto::audit_hash& last) {
  const pqxx::result head = tx.exec_params(read_head_sql, tenant_text);
  const std::int64_t head_seq = head.empty() ? 0 : head[0][0].as<std::int64_t>();
  if (head_seq != rows) {
    return audit_break{rows + 1, head_seq > rows ? "row " + std::to_string(rows + 1) + " is missing (the head is at " +
                                                       std::to_string(head_seq) + ")"
                                                 : "the chain runs past its recorded head (" +
                                                       std::to_string(head_seq) + ")"};
  }
  if (head_seq > 0 && !equal_bytes(span_of(pqxx::binarystring(head[0][1])), last)) {
    return audit_break{rows, "the recorded head hash does not match row " + std::to_string(rows)};
  }
  return std::nullopt;
}

}  // namespace

audit_verification verify_audit_chain(pool& connections, const key_store& keys, const core::uuid& tenant) {
  audit_verification result;
  result.tenant = tenant;
  const std::string tenant_text = tenant.to_string();
  auto lease = connections.checkout();
  pqxx::transaction<pqxx::isolation_level::repeatable_read, pqxx::readwrite_policy::read_only> tx(lease.connection(),
                                                                                             "bankworker_audit_verify");
  tx.exec_prepared(set_tenant_statement, tenant_text);
  const std::vector<crypto::signing_key> signers = keys.verification_keys(tx);
  crypto::audit_hash prev{};
  bool done = false;
  while (!done && !result.broken) {
    const pqxx::result page =
        tx.exec_params(read_chain_page_sql, tenant_text, result.rows, limits::audit_verify_page_rows);
    if (page.size() < limits::audit_verify_page_rows) done = true;
    for (const auto& r : page) {
      crypto::audit_hash hash{};
      result.broken = check_chain_row(r, tenant, result.rows + 1, prev, signers, hash);
      if (result.broken) break;
      prev = hash;
      ++result.rows;
    }
  }
  if (!result.broken) result.broken = check_chain_head(tx, tenant_text, result.rows, prev);
  result.head = prev;
  tx.commit();
  return result;
}

std::string audit_checkpoint_text(const key_store& keys, const audit_verification& verified, std::string_view time_utc) {
  BW_INVARIANT(!verified.broken.has_value());
  const crypto::audit_checkpoint checkpoint{.tenant = verified.tenant,
                                            .size = verified.rows,
                                            .head = verified.head,
                                            .time = std::string(time_utc),
                                            .key_id = keys.signing().key_id()};
  return crypto::format_checkpoint(checkpoint, keys.signing());
}

}  // namespace bankworker::db
