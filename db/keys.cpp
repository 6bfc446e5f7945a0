#include "db/keys.hpp"

#include <sodium.h>

#include <algorithm>

#include "core/assert.hpp"
#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "db/audit.hpp"
#include "db/statement.hpp"
#include "db/tenant_scope.hpp"

namespace bankworker::db {

namespace {

// --- tenant key versions -------------------------------------------------------------------------

constexpr const char* insert_tenant_key_sql =
    "INSERT INTO bankworker.tenant_keys (tenant_id, version, state, root_key_id, wrapped_key)"
    " VALUES ($1, $2, $3, $4, $5)";
// Sealing and rewrapping share the primary row (FOR SHARE) so that a rotation, which locks it FOR
// UPDATE, waits for them rather than retiring a version they are about to use.
constexpr statement primary_key_for_share_sql{"keys_primary_for_share",
    "SELECT version, root_key_id, wrapped_key FROM bankworker.tenant_keys"
    " WHERE tenant_id = $1 AND state = 'primary' FOR SHARE"};
constexpr const char* primary_key_for_update_sql =
    "SELECT version FROM bankworker.tenant_keys WHERE tenant_id = $1 AND state = 'primary' FOR UPDATE";
constexpr const char* has_primary_key_sql =
    "SELECT EXISTS (SELECT 1 FROM bankworker.tenant_keys WHERE tenant_id = $1 AND state = 'primary')";
constexpr const char* last_key_version_sql =
    "SELECT coalesce(max(version), 0) FROM bankworker.tenant_keys WHERE tenant_id = $1";
constexpr const char* demote_primary_sql =
    "UPDATE bankworker.tenant_keys SET state = 'active' WHERE tenant_id = $1 AND version = $2 AND state = 'primary'";
constexpr const char* active_versions_for_update_sql =
    "SELECT version FROM bankworker.tenant_keys WHERE tenant_id = $1 AND state = 'active' ORDER BY version FOR UPDATE";
constexpr const char* version_needed_sql =
    "SELECT EXISTS (SELECT 1 FROM bankworker.sealed_secrets WHERE tenant_id = $1 AND kek_version = $2)";
constexpr const char* retire_version_sql =
    "UPDATE bankworker.tenant_keys SET state = 'retired', wrapped_key = NULL, retired_at = now()"
    " WHERE tenant_id = $1 AND version = $2 AND state = 'active'";
constexpr const char* keys_under_other_root_sql =
    "SELECT version, root_key_id, wrapped_key FROM bankworker.tenant_keys"
    " WHERE tenant_id = $1 AND wrapped_key IS NOT NULL AND root_key_id <> $2 ORDER BY version FOR UPDATE";
constexpr const char* set_wrapped_key_sql =
    "UPDATE bankworker.tenant_keys SET root_key_id = $3, wrapped_key = $4 WHERE tenant_id = $1 AND version = $2";
constexpr const char* destroy_keys_sql =
    "UPDATE bankworker.tenant_keys SET state = 'destroyed', wrapped_key = NULL, destroyed_at = now()"
    " WHERE tenant_id = $1 AND state IN ('primary', 'active')";
constexpr const char* offboard_tenant_sql =
    "UPDATE bankworker.tenants SET status = 'offboarded' WHERE tenant_id = $1";
// The second count is of legacy rows: their envelope's algorithm byte (the second) is 1
// (substring, unlike get_byte, cannot fail on a short, corrupt envelope).
constexpr const char* key_status_sql =
    "SELECT k.version, k.state, k.root_key_id,"
    " (SELECT count(*) FROM bankworker.sealed_secrets s WHERE s.tenant_id = k.tenant_id AND s.kek_version = k.version),"
    " (SELECT count(*) FROM bankworker.sealed_secrets s WHERE s.tenant_id = k.tenant_id AND s.kek_version = k.version"
    "   AND substring(s.envelope FROM 2 FOR 1) = '\\x01'::bytea)"
    " FROM bankworker.tenant_keys k WHERE k.tenant_id = $1 ORDER BY k.version";

// --- sealed secrets ------------------------------------------------------------------------------

constexpr statement insert_secret_sql{"keys_insert_secret",
    "INSERT INTO bankworker.sealed_secrets (tenant_id, secret_id, purpose, subject_id, kek_version,"
    " wrapped_data_key, envelope) VALUES ($1, $2, $3, $4, $5, $6, $7)"};
constexpr statement insert_shred_key_sql{"keys_insert_shred_key",
    "INSERT INTO bankworker.secret_shred_keys (tenant_id, secret_id, shred_key) VALUES ($1, $2, $3)"};
// The row, its shred key (none for a legacy algorithm-1 row, or once shredded) and the key version
// it needs in one statement, so all come from one snapshot: a rewrap or retirement committing in
// between cannot leave us with a row and no key.
constexpr statement open_secret_sql{"keys_open_secret",
    "SELECT s.kek_version, s.wrapped_data_key, s.envelope, k.state, k.root_key_id, k.wrapped_key, sk.shred_key"
    " FROM bankworker.sealed_secrets s"
    " JOIN bankworker.tenant_keys k ON k.tenant_id = s.tenant_id AND k.version = s.kek_version"
    " LEFT JOIN bankworker.secret_shred_keys sk ON sk.tenant_id = s.tenant_id AND sk.secret_id = s.secret_id"
    " WHERE s.tenant_id = $1 AND s.secret_id = $2"};
// The shred key goes first and by name (the cascade from the sealed row would take it too): it is
// the deletion that makes every earlier copy of the envelope useless.
constexpr const char* delete_shred_key_sql =
    "DELETE FROM bankworker.secret_shred_keys WHERE tenant_id = $1 AND secret_id = $2";
constexpr const char* delete_secret_sql =
    "DELETE FROM bankworker.sealed_secrets WHERE tenant_id = $1 AND secret_id = $2 RETURNING purpose, kek_version";
constexpr const char* delete_tenant_secrets_sql = "DELETE FROM bankworker.sealed_secrets WHERE tenant_id = $1";
// A row's shred key (algorithm 2) comes along: rewrapping needs it, and leaves it as it is.
constexpr const char* rewrap_candidates_sql =
    "SELECT s.secret_id, s.purpose, s.envelope, k.version, k.root_key_id, k.wrapped_key, sk.shred_key"
    " FROM bankworker.sealed_secrets s"
    " JOIN bankworker.tenant_keys k ON k.tenant_id = s.tenant_id AND k.version = s.kek_version"
    " LEFT JOIN bankworker.secret_shred_keys sk ON sk.tenant_id = s.tenant_id AND sk.secret_id = s.secret_id"
    " WHERE s.tenant_id = $1 AND s.kek_version <> $2"
    " ORDER BY s.secret_id LIMIT $3 FOR UPDATE OF s SKIP LOCKED";
// One statement for the whole batch: the new wrapped keys and envelopes travel as hex arrays.
constexpr const char* rewrap_update_sql =
    "UPDATE bankworker.sealed_secrets s SET kek_version = $2, wrapped_data_key = decode(u.wrapped, 'hex'),"
    " envelope = decode(u.envelope, 'hex'), rewrapped_at = now()"
    " FROM unnest($3::uuid[], $4::text[], $5::text[]) AS u(secret_id, wrapped, envelope)"
    " WHERE s.tenant_id = $1 AND s.secret_id = u.secret_id";
// Legacy rows to reseal, with what their associated data binds. A Plaid token's binds its
// connection's environment, which only the connection row knows: a token whose connection row is
// gone cannot be opened, so it is not taken (and counted by count_legacy_sql).
constexpr const char* reseal_candidates_sql =
    "SELECT s.secret_id, s.purpose, s.subject_id, s.envelope, s.wrapped_data_key, k.version, k.state,"
    " k.root_key_id, k.wrapped_key, coalesce(c.environment, '')"
    " FROM bankworker.sealed_secrets s"
    " JOIN bankworker.tenant_keys k ON k.tenant_id = s.tenant_id AND k.version = s.kek_version"
    " LEFT JOIN bankworker.connections c ON s.purpose = 'plaid.access_token' AND c.tenant_id = s.tenant_id"
    "  AND c.connection_id::text = s.subject_id"
    " WHERE s.tenant_id = $1 AND substring(s.envelope FROM 2 FOR 1) = '\\x01'::bytea"
    "  AND (s.purpose <> 'plaid.access_token' OR c.connection_id IS NOT NULL)"
    " ORDER BY s.secret_id LIMIT $2 FOR UPDATE OF s SKIP LOCKED";
constexpr const char* count_legacy_sql =
    "SELECT count(*) FROM bankworker.sealed_secrets s WHERE s.tenant_id = $1 AND substring(s.envelope FROM 2 FOR 1) = '\\x01'::bytea";
constexpr const char* count_other_versions_sql =
    "SELECT count(*) FROM bankworker.sealed_secrets WHERE tenant_id = $1 AND kek_version <> $2";

// --- audit signing keys (not tenant data) ---------------------------------------------------------

constexpr const char* active_signing_key_sql =
    "SELECT key_id, root_key_id, wrapped_seed FROM bankworker.audit_signing_keys WHERE state = 'active'";
constexpr const char* all_signing_keys_sql =
    "SELECT key_id, root_key_id, wrapped_seed, public_key FROM bankworker.audit_signing_keys ORDER BY created_at";
constexpr const char* insert_signing_key_sql =
    "INSERT INTO bankworker.audit_signing_keys (key_id, public_key, root_key_id, wrapped_seed, state)"
    " VALUES ($1, $2, $3, $4, 'active') ON CONFLICT DO NOTHING";
constexpr const char* signing_keys_under_other_root_sql =
    "SELECT key_id, root_key_id, wrapped_seed FROM bankworker.audit_signing_keys WHERE root_key_id <> $1 FOR UPDATE";
constexpr const char* set_wrapped_seed_sql =
    "UPDATE bankworker.audit_signing_keys SET root_key_id = $2, wrapped_seed = $3 WHERE key_id = $1";

constexpr const char* list_tenants_sql = "SELECT * FROM bankworker.tenant_ids() LIMIT $1";

pqxx::binarystring as_binary(const crypto::bytes& data) { return pqxx::binarystring(data.data(), data.size()); }

std::span<const std::uint8_t> span_of(const pqxx::binarystring& data) {
  return {reinterpret_cast<const std::uint8_t*>(data.data()), data.size()};
}

std::string details_json(std::initializer_list<std::pair<std::string_view, std::string_view>> strings,
                         std::initializer_list<std::pair<std::string_view, std::int64_t>> numbers = {}) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : strings) {
    if (!first) out.push_back(',');
    first = false;
    core::append_json_string(key, out);
    out.push_back(':');
    core::append_json_string(value, out);
  }
  for (const auto& [key, value] : numbers) {
    if (!first) out.push_back(',');
    first = false;
    core::append_json_string(key, out);
    out.push_back(':');
    out += std::to_string(value);
  }
  out.push_back('}');
  return out;
}

// A stored shred key, copied straight into guarded memory.
crypto::secret shred_key_of(const pqxx::field& field) {
  const pqxx::binarystring stored(field);
  BW_INVARIANT(stored.size() == crypto::shred_key_bytes);
  return crypto::secret::filled(stored.size(), [&](unsigned char* out) {
    std::copy_n(reinterpret_cast<const unsigned char*>(stored.data()), stored.size(), out);
    return true;
  });
}

// Refuses a row whose kek_version and wrapped_data_key columns disagree with its envelope header.
void check_row_columns(const crypto::envelope_view& view, std::uint32_t version, const pqxx::binarystring& wrapped,
                       const std::string& secret_text) {
  const std::span<const std::uint8_t> column = span_of(wrapped);
  if (view.kek_version != version || view.wrapped_data_key.size() != column.size() ||
      !std::equal(view.wrapped_data_key.begin(), view.wrapped_data_key.end(), column.begin())) {
    throw key_error(key_failure::row_inconsistent,
                    "sealed secret " + secret_text + ": columns disagree with the envelope header");
  }
}

// A PostgreSQL array literal of elements that need no quoting (uuids, hex).
class plain_array_text {
 public:
  void add(std::string_view element) {
    if (text_.size() > 1) text_.push_back(',');
    text_ += element;
  }
  // Closes the literal; call once, after the last add().
  const std::string& finish() {
    text_.push_back('}');
    return text_;
  }

 private:
  std::string text_ = "{";
};

// The rows a batch has sealed under the primary version, as rewrap_update_sql's three arrays.
struct moved_rows {
  plain_array_text ids;
  plain_array_text wrapped_keys;
  plain_array_text envelopes;
  std::size_t count = 0;

  void add(const core::uuid& secret_id, const crypto::sealed_envelope& sealed) {
    ids.add(secret_id.to_string());
    wrapped_keys.add(crypto::to_hex(sealed.wrapped_data_key));
    envelopes.add(crypto::to_hex(sealed.envelope));
    ++count;
  }
};

std::uint32_t as_version(const pqxx::field& field) {
  const long long value = field.as<long long>();
  BW_INVARIANT(value > 0);
  BW_INVARIANT(value <= static_cast<long long>(limits::kek_versions_max));
  return static_cast<std::uint32_t>(value);
}

}  // namespace

key_store::key_store(crypto::root_key_ring roots, key_store_settings settings, crypto::key_cache::clock_function clock)
    : roots_(std::move(roots)), settings_(settings), cache_(settings.cache, std::move(clock)) {
  BW_INVARIANT(!roots_.empty());
  if (settings_.rewrap_batch_rows == 0 || settings_.rewrap_batch_rows > limits::rewrap_batch_rows_max) {
    throw std::invalid_argument("rewrap_batch_rows must be 1..rewrap_batch_rows_max");
  }
}

void key_store::prepare(pool& connections) {
  if (prepared_.load(std::memory_order_acquire)) return;
  std::lock_guard lock(signing_mutex_);
  if (prepared_.load(std::memory_order_relaxed)) return;
  auto lease = connections.checkout();
  pqxx::work tx(lease.connection(), "bankworker_signing_key");
  pqxx::result active = tx.exec(active_signing_key_sql);
  if (active.empty()) {
    // First start on this database: a random seed, wrapped by the primary root key. Two processes
    // racing here both insert; the unique index keeps one and the loser reads it back.
    crypto::signing_key fresh = crypto::signing_key::generate();
    crypto::root_key_provider& root = roots_.primary();
    const crypto::bytes wrapped =
        root.wrap(fresh.seed(), crypto::signing_seed_associated_data(fresh.key_id(), root.key_id()));
    const auto& public_key = fresh.verification_key();
    tx.exec_params0(insert_signing_key_sql, fresh.key_id(), pqxx::binarystring(public_key.data(), public_key.size()),
                    root.key_id(), as_binary(wrapped));
    active = tx.exec(active_signing_key_sql);
  }
  BW_INVARIANT(active.size() == 1);
  const std::string key_id = active[0][0].as<std::string>();
  const std::string root_key_id = active[0][1].as<std::string>();
  const pqxx::binarystring wrapped(active[0][2]);
  crypto::secret seed =
      roots_.find(root_key_id).unwrap(span_of(wrapped), crypto::signing_seed_associated_data(key_id, root_key_id));
  auto key = std::make_unique<crypto::signing_key>(std::move(seed));
  BW_INVARIANT(key->key_id() == key_id);
  tx.commit();
  signing_ = std::move(key);
  prepared_.store(true, std::memory_order_release);
}

const crypto::signing_key& key_store::signing() const {
  BW_INVARIANT(prepared_.load(std::memory_order_acquire));
  return *signing_;
}

std::vector<crypto::signing_key> key_store::verification_keys(pqxx::transaction_base& tx) const {
  std::vector<crypto::signing_key> keys;
  for (const auto& row : tx.exec(all_signing_keys_sql)) {
    const std::string key_id = row[0].as<std::string>();
    const std::string root_key_id = row[1].as<std::string>();
    const pqxx::binarystring wrapped(row[2]);
    crypto::secret seed =
        roots_.find(root_key_id).unwrap(span_of(wrapped), crypto::signing_seed_associated_data(key_id, root_key_id));
    crypto::signing_key key(std::move(seed));
    const pqxx::binarystring stored_public(row[3]);
    const auto& derived = key.verification_key();
    // The seed is authenticated under the root key; the stored public key is not, so it must
    // match what the seed derives.
    if (key.key_id() != key_id || stored_public.size() != derived.size() ||
        !std::equal(derived.begin(), derived.end(), span_of(stored_public).begin())) {
      throw crypto::root_key_error(crypto::root_key_failure::authentication_failed,
                                   "audit signing key " + key_id + " does not match its wrapped seed");
    }
    keys.push_back(std::move(key));
  }
  return keys;
}

std::shared_ptr<const crypto::secret> key_store::unwrap_tenant_key(const core::uuid& tenant, std::uint32_t version,
                                                                   const std::string& root_key_id,
                                                                   const pqxx::binarystring& wrapped) {
  if (auto cached = cache_.find(tenant, version)) return cached;
  auto key = std::make_shared<const crypto::secret>(roots_.find(root_key_id).unwrap(
      span_of(wrapped), crypto::tenant_key_associated_data(tenant, version, root_key_id)));
  if (key->size() != crypto::key_bytes) {
    throw key_error(key_failure::row_inconsistent, "tenant key version " + std::to_string(version) + " has the wrong size");
  }
  cache_.insert(tenant, version, key);
  return key;
}

std::uint32_t key_store::create_tenant_key(pqxx::work& tx, const core::uuid& tenant) {
  const crypto::secret kek = crypto::secret::random(crypto::key_bytes);
  crypto::root_key_provider& root = roots_.primary();
  const crypto::bytes wrapped = root.wrap(kek, crypto::tenant_key_associated_data(tenant, 1, root.key_id()));
  tx.exec_params0(insert_tenant_key_sql, tenant.to_string(), 1, "primary", root.key_id(), as_binary(wrapped));
  return 1;
}

std::uint32_t key_store::rotate_tenant_key(pqxx::work& tx, const core::uuid& tenant, std::string_view actor) {
  const std::string tenant_text = tenant.to_string();
  const pqxx::result primary = tx.exec_params(primary_key_for_update_sql, tenant_text);
  if (primary.empty()) {
    throw key_error(key_failure::key_unavailable,
                    "tenant " + tenant_text + " has no primary key (unknown tenant, or its keys were destroyed)");
  }
  const std::uint32_t old_version = as_version(primary[0][0]);
  const std::uint32_t last = static_cast<std::uint32_t>(tx.exec_params1(last_key_version_sql, tenant_text)[0].as<long long>());
  if (last >= limits::kek_versions_max) {
    throw key_error(key_failure::key_unavailable, "tenant " + tenant_text + " reached kek_versions_max");
  }
  const std::uint32_t new_version = last + 1;
  tx.exec_params0(demote_primary_sql, tenant_text, old_version);
  const crypto::secret kek = crypto::secret::random(crypto::key_bytes);
  crypto::root_key_provider& root = roots_.primary();
  const crypto::bytes wrapped = root.wrap(kek, crypto::tenant_key_associated_data(tenant, new_version, root.key_id()));
  tx.exec_params0(insert_tenant_key_sql, tenant_text, new_version, "primary", root.key_id(), as_binary(wrapped));
  append_audit(tx, *this,
               {.tenant = tenant,
                .actor = actor,
                .action = "key.rotated",
                .subject = tenant_text,
                .details = details_json({}, {{"previous_version", old_version}, {"version", new_version}})});
  return new_version;
}

void key_store::seal_secret(pqxx::work& tx, const crypto::secret_context& context, const crypto::secret& plaintext,
                            std::string_view actor) {
  const std::string tenant_text = context.tenant.to_string();
  const pqxx::result primary = exec_statement(tx, primary_key_for_share_sql, tenant_text);
  if (primary.empty()) {
    throw key_error(key_failure::key_unavailable,
                    "tenant " + tenant_text + " has no primary key (unknown tenant, or its keys were destroyed)");
  }
  const std::uint32_t version = as_version(primary[0][0]);
  const auto kek = unwrap_tenant_key(context.tenant, version, primary[0][1].as<std::string>(),
                                     pqxx::binarystring(primary[0][2]));
  // The shred key lives only in its own row, written in this transaction; the shred deletes it.
  const crypto::secret shred_key = crypto::secret::random(crypto::shred_key_bytes);
  crypto::sealed_envelope sealed;
  {
    const crypto::secret::view text = plaintext.reveal();
    sealed = crypto::seal_envelope(*kek, version, context, text.text(), &shred_key);
  }
  const std::string secret_text = context.secret_id.to_string();
  const std::string_view purpose = crypto::to_string(context.purpose);
  exec_statement(tx, insert_secret_sql, tenant_text, secret_text, std::string(purpose), context.subject_id, version,
                 as_binary(sealed.wrapped_data_key), as_binary(sealed.envelope));
  {
    const crypto::secret::view shred = shred_key.reveal();
    exec_statement(tx, insert_shred_key_sql, tenant_text, secret_text, pqxx::binarystring(shred.data(), shred.size()));
  }
  append_audit(tx, *this,
               {.tenant = context.tenant,
                .actor = actor,
                .action = "secret.sealed",
                .subject = secret_text,
                .details = details_json({{"purpose", purpose}, {"subject_id", context.subject_id}},
                                        {{"kek_version", version}})});
}

crypto::secret key_store::open_secret(pqxx::work& tx, const crypto::secret_context& context) {
  const std::string tenant_text = context.tenant.to_string();
  const pqxx::result rows = exec_statement(tx, open_secret_sql, tenant_text, context.secret_id.to_string());
  if (rows.empty()) {
    throw key_error(key_failure::secret_not_found,
                    "no sealed secret " + context.secret_id.to_string() + " for tenant " + tenant_text);
  }
  const pqxx::row row = rows[0];
  const std::uint32_t version = as_version(row[0]);
  const pqxx::binarystring wrapped_column(row[1]);
  const pqxx::binarystring envelope(row[2]);
  // Size first, tenant second, before any key is touched (parse_envelope does both).
  const crypto::envelope_view view = crypto::parse_envelope(span_of(envelope), context.tenant);
  check_row_columns(view, version, wrapped_column, context.secret_id.to_string());
  const std::string state = row[3].as<std::string>();
  if (state != "primary" && state != "active") {
    throw key_error(key_failure::key_unavailable,
                    "sealed secret " + context.secret_id.to_string() + " needs key version " + std::to_string(version) +
                        ", which is " + state);
  }
  const auto kek = unwrap_tenant_key(context.tenant, version, row[4].as<std::string>(), pqxx::binarystring(row[5]));
  // No shred key: a legacy row (algorithm 1, which needs none) or a row whose shred key is gone,
  // which open_envelope refuses (shred_key_missing) before touching any key.
  if (row[6].is_null()) return crypto::open_envelope(*kek, context, view);
  const crypto::secret shred_key = shred_key_of(row[6]);
  return crypto::open_envelope(*kek, context, view, &shred_key);
}

bool key_store::shred_secret(pqxx::work& tx, const core::uuid& tenant, const core::uuid& secret_id,
                             std::string_view actor) {
  const std::string secret_text = secret_id.to_string();
  const std::size_t shred_keys = tx.exec_params0(delete_shred_key_sql, tenant.to_string(), secret_text).affected_rows();
  const pqxx::result deleted = tx.exec_params(delete_secret_sql, tenant.to_string(), secret_text);
  if (deleted.empty()) return false;
  const std::string purpose = deleted[0][0].as<std::string>();
  // shred_key 0 marks a legacy row: earlier copies of it still open while its key version lives.
  append_audit(tx, *this,
               {.tenant = tenant,
                .actor = actor,
                .action = "secret.shredded",
                .subject = secret_text,
                .details = details_json({{"purpose", purpose}}, {{"kek_version", deleted[0][1].as<long long>()},
                                                                 {"shred_key", static_cast<std::int64_t>(shred_keys)}})});
  return true;
}

// The frame rewrap_batch and reseal_legacy_batch share. In one tenant transaction: the primary
// version locked FOR SHARE (a rotation waits) and its key unwrapped; `move_rows` selects at most
// batch_rows rows and seals each under it into `moved`; one UPDATE writes them all and one audit
// row (`action`) records how many. Nothing is written when the tenant's keys are destroyed or no row
// is left.
template <typename MoveRows>
std::size_t key_store::move_batch(pool& connections, const core::uuid& tenant, std::string_view actor,
                                  std::size_t batch_rows, std::string_view action, MoveRows move_rows) {
  prepare(connections);
  if (batch_rows == 0) batch_rows = settings_.rewrap_batch_rows;
  BW_INVARIANT(batch_rows <= limits::rewrap_batch_rows_max);
  const std::string tenant_text = tenant.to_string();
  return with_tenant(connections, tenant, [&](pqxx::work& tx) -> std::size_t {
    const pqxx::result primary = exec_statement(tx, primary_key_for_share_sql, tenant_text);
    if (primary.empty()) return 0;  // destroyed: nothing to move the rows to
    const std::uint32_t primary_version = as_version(primary[0][0]);
    const auto new_kek = unwrap_tenant_key(tenant, primary_version, primary[0][1].as<std::string>(),
                                           pqxx::binarystring(primary[0][2]));
    moved_rows moved;
    move_rows(tx, primary_version, *new_kek, batch_rows, moved);
    if (moved.count == 0) return 0;
    const pqxx::result updated = tx.exec_params(rewrap_update_sql, tenant_text, primary_version, moved.ids.finish(),
                                                moved.wrapped_keys.finish(), moved.envelopes.finish());
    BW_INVARIANT(updated.affected_rows() == moved.count);
    append_audit(tx, *this,
                 {.tenant = tenant,
                  .actor = actor,
                  .action = action,
                  .subject = tenant_text,
                  .details = details_json({}, {{"version", primary_version},
                                               {"rows", static_cast<std::int64_t>(moved.count)}})});
    return moved.count;
  });
}

std::size_t key_store::rewrap_batch(pool& connections, const core::uuid& tenant, std::string_view actor,
                                    std::size_t batch_rows) {
  const std::string tenant_text = tenant.to_string();
  const auto rewrap_rows = [&](pqxx::work& tx, std::uint32_t primary_version, const crypto::secret& new_kek,
                               std::size_t rows_max, moved_rows& moved) {
    for (const auto& row : tx.exec_params(rewrap_candidates_sql, tenant_text, primary_version, rows_max)) {
      const auto secret_id = core::uuid::parse(row[0].as<std::string>());
      const auto purpose = crypto::parse_secret_purpose(row[1].as<std::string>());
      BW_INVARIANT(secret_id.has_value());
      BW_INVARIANT(purpose.has_value());
      const pqxx::binarystring envelope(row[2]);
      const std::uint32_t old_version = as_version(row[3]);
      if (row[5].is_null()) {
        throw key_error(key_failure::key_unavailable,
                        "sealed secret " + secret_id->to_string() + " needs retired or destroyed key version " +
                            std::to_string(old_version));
      }
      const auto old_kek = unwrap_tenant_key(tenant, old_version, row[4].as<std::string>(), pqxx::binarystring(row[5]));
      const std::optional<crypto::secret> shred_key =
          row[6].is_null() ? std::nullopt : std::optional<crypto::secret>(shred_key_of(row[6]));
      moved.add(*secret_id, crypto::rewrap_envelope(span_of(envelope), tenant, *secret_id, *purpose, *old_kek, new_kek,
                                                    primary_version, shred_key ? &*shred_key : nullptr));
    }
  };
  return move_batch(connections, tenant, actor, batch_rows, "keys.rewrapped", rewrap_rows);
}

struct key_store::resealed_row {
  core::uuid secret_id;
  crypto::sealed_envelope sealed;
  crypto::secret shred_key;
};

// Row columns as reseal_candidates_sql selects them.
key_store::resealed_row key_store::reseal_legacy_row(const core::uuid& tenant, const pqxx::row& row,
                                                     const crypto::secret& new_kek, std::uint32_t new_version) {
  const auto secret_id = core::uuid::parse(row[0].as<std::string>());
  const auto purpose = crypto::parse_secret_purpose(row[1].as<std::string>());
  BW_INVARIANT(secret_id.has_value());
  BW_INVARIANT(purpose.has_value());
  const crypto::secret_context context{.purpose = *purpose,
                                       .tenant = tenant,
                                       .secret_id = *secret_id,
                                       .subject_id = row[2].as<std::string>(),
                                       .environment = row[9].as<std::string>()};
  const pqxx::binarystring envelope(row[3]);
  const std::uint32_t old_version = as_version(row[5]);
  const crypto::envelope_view view = crypto::parse_envelope(span_of(envelope), tenant);
  BW_INVARIANT(view.algorithm == crypto::algorithm_xchacha20poly1305_blake2b);
  check_row_columns(view, old_version, pqxx::binarystring(row[4]), secret_id->to_string());
  const std::string state = row[6].as<std::string>();
  if ((state != "primary" && state != "active") || row[8].is_null()) {
    throw key_error(key_failure::key_unavailable, "sealed secret " + secret_id->to_string() + " needs key version " +
                                                      std::to_string(old_version) + ", which is " + state);
  }
  const auto old_kek = unwrap_tenant_key(tenant, old_version, row[7].as<std::string>(), pqxx::binarystring(row[8]));
  // The payload exists in plaintext only here, in guarded memory, between the open and the seal.
  const crypto::secret plaintext = crypto::open_envelope(*old_kek, context, view);
  crypto::secret shred_key = crypto::secret::random(crypto::shred_key_bytes);
  crypto::sealed_envelope sealed;
  {
    const crypto::secret::view text = plaintext.reveal();
    sealed = crypto::seal_envelope(new_kek, new_version, context, text.text(), &shred_key);
  }
  return {*secret_id, std::move(sealed), std::move(shred_key)};
}

std::size_t key_store::reseal_legacy_batch(pool& connections, const core::uuid& tenant, std::string_view actor,
                                           std::size_t batch_rows) {
  const std::string tenant_text = tenant.to_string();
  const auto reseal_rows = [&](pqxx::work& tx, std::uint32_t primary_version, const crypto::secret& new_kek,
                               std::size_t rows_max, moved_rows& moved) {
    for (const auto& row : tx.exec_params(reseal_candidates_sql, tenant_text, rows_max)) {
      const resealed_row resealed = reseal_legacy_row(tenant, row, new_kek, primary_version);
      moved.add(resealed.secret_id, resealed.sealed);
      const crypto::secret::view shred = resealed.shred_key.reveal();
      exec_statement(tx, insert_shred_key_sql, tenant_text, resealed.secret_id.to_string(),
                     pqxx::binarystring(shred.data(), shred.size()));
    }
  };
  return move_batch(connections, tenant, actor, batch_rows, "keys.resealed", reseal_rows);
}

std::vector<std::uint32_t> key_store::retire_unused_versions(pool& connections, const core::uuid& tenant,
                                                             std::string_view actor) {
  prepare(connections);
  const std::string tenant_text = tenant.to_string();
  std::vector<std::uint32_t> retired = with_tenant(connections, tenant, [&](pqxx::work& tx) {
    std::vector<std::uint32_t> done;
    // Locking the versions first, then asking whether a row needs them in later statements (each
    // a fresh snapshot under READ COMMITTED), means nothing committed before the lock is missed.
    const pqxx::result candidates = tx.exec_params(active_versions_for_update_sql, tenant_text);
    for (const auto& candidate : candidates) {
      const std::uint32_t version = as_version(candidate[0]);
      if (tx.exec_params1(version_needed_sql, tenant_text, version)[0].as<bool>()) continue;
      tx.exec_params0(retire_version_sql, tenant_text, version);
      append_audit(tx, *this,
                   {.tenant = tenant,
                    .actor = actor,
                    .action = "key.retired",
                    .subject = tenant_text,
                    .details = details_json({}, {{"version", version}})});
      done.push_back(version);
    }
    return done;
  });
  for (const std::uint32_t version : retired) cache_.forget(tenant, version);
  return retired;
}

rewrap_report key_store::rewrap_tenant(pool& connections, const core::uuid& tenant, std::string_view actor,
                                       std::size_t batch_rows) {
  prepare(connections);
  if (batch_rows == 0) batch_rows = settings_.rewrap_batch_rows;
  rewrap_report report;
  // Bounded: every batch moves at least one row off an old version, so there are at most
  // (rows / batch + 1) batches; the bound below only guards against a bug.
  const std::size_t batches_max = 1 + 100'000'000 / batch_rows;
  // Legacy rows first: a reseal also moves them to the primary version, so the rewrap skips them.
  for (std::size_t i = 0; i < batches_max; ++i) {
    const std::size_t done = reseal_legacy_batch(connections, tenant, actor, batch_rows);
    if (done == 0) break;
    report.resealed += done;
    ++report.batches;
  }
  for (std::size_t i = 0; i < batches_max; ++i) {
    const std::size_t done = rewrap_batch(connections, tenant, actor, batch_rows);
    if (done == 0) break;
    report.rewrapped += done;
    ++report.batches;
  }
  report.retired = retire_unused_versions(connections, tenant, actor);
  with_tenant(connections, tenant, [&](pqxx::work& tx) {
    const pqxx::result primary = exec_statement(tx, primary_key_for_share_sql, tenant.to_string());
    if (primary.empty()) return;
    report.primary_version = as_version(primary[0][0]);
    report.remaining = tx.exec_params1(count_other_versions_sql, tenant.to_string(), report.primary_version)[0]
                           .as<std::size_t>();
    report.legacy_remaining = tx.exec_params1(count_legacy_sql, tenant.to_string())[0].as<std::size_t>();
  });
  return report;
}

rewrap_report key_store::replace_tenant_key(pool& connections, const core::uuid& tenant, std::string_view actor,
                                            std::size_t batch_rows) {
  prepare(connections);
  // An offboarded tenant has no primary version and nothing to move: skipped, not an error, so one
  // command can renew every tenant.
  const bool rotated = with_tenant(connections, tenant, [&](pqxx::work& tx) {
    if (!tx.exec_params1(has_primary_key_sql, tenant.to_string())[0].as<bool>()) return false;
    rotate_tenant_key(tx, tenant, actor);
    return true;
  });
  if (!rotated) return {};
  return rewrap_tenant(connections, tenant, actor, batch_rows);
}

std::size_t key_store::rewrap_tenant_keys_to_primary_root(pqxx::work& tx, const core::uuid& tenant,
                                                          std::string_view actor) {
  crypto::root_key_provider& target = roots_.primary();
  const std::string tenant_text = tenant.to_string();
  const pqxx::result rows = tx.exec_params(keys_under_other_root_sql, tenant_text, target.key_id());
  for (const auto& row : rows) {
    const std::uint32_t version = as_version(row[0]);
    const std::string old_root = row[1].as<std::string>();
    const pqxx::binarystring wrapped(row[2]);
    const crypto::secret kek =
        roots_.find(old_root).unwrap(span_of(wrapped), crypto::tenant_key_associated_data(tenant, version, old_root));
    const crypto::bytes rewrapped =
        target.wrap(kek, crypto::tenant_key_associated_data(tenant, version, target.key_id()));
    tx.exec_params0(set_wrapped_key_sql, tenant_text, version, target.key_id(), as_binary(rewrapped));
  }
  if (!rows.empty()) {
    append_audit(tx, *this,
                 {.tenant = tenant,
                  .actor = actor,
                  .action = "keys.root_rewrapped",
                  .subject = tenant_text,
                  .details = details_json({{"root_key_id", target.key_id()}},
                                          {{"versions", static_cast<std::int64_t>(rows.size())}})});
  }
  return rows.size();
}

std::size_t key_store::rewrap_signing_keys_to_primary_root(pool& connections) {
  crypto::root_key_provider& target = roots_.primary();
  auto lease = connections.checkout();
  pqxx::work tx(lease.connection(), "bankworker_signing_key_rewrap");
  const pqxx::result rows = tx.exec_params(signing_keys_under_other_root_sql, target.key_id());
  for (const auto& row : rows) {
    const std::string key_id = row[0].as<std::string>();
    const std::string old_root = row[1].as<std::string>();
    const pqxx::binarystring wrapped(row[2]);
    const crypto::secret seed =
        roots_.find(old_root).unwrap(span_of(wrapped), crypto::signing_seed_associated_data(key_id, old_root));
    const crypto::bytes rewrapped = target.wrap(seed, crypto::signing_seed_associated_data(key_id, target.key_id()));
    tx.exec_params0(set_wrapped_seed_sql, key_id, target.key_id(), as_binary(rewrapped));
  }
  lease.commit(tx);
  return rows.size();
}

std::size_t key_store::destroy_tenant_keys(pqxx::work& tx, const core::uuid& tenant, std::string_view actor) {
  const std::string tenant_text = tenant.to_string();
  const std::size_t shredded = tx.exec_params0(delete_tenant_secrets_sql, tenant_text).affected_rows();
  const std::size_t versions = tx.exec_params0(destroy_keys_sql, tenant_text).affected_rows();
  tx.exec_params0(offboard_tenant_sql, tenant_text);
  append_audit(tx, *this,
               {.tenant = tenant,
                .actor = actor,
                .action = "keys.destroyed",
                .subject = tenant_text,
                .details = details_json({}, {{"secrets_shredded", static_cast<std::int64_t>(shredded)},
                                             {"versions_destroyed", static_cast<std::int64_t>(versions)}})});
  cache_.forget_tenant(tenant);
  return shredded;
}

std::vector<key_version_status> key_status(pqxx::transaction_base& tx, const core::uuid& tenant) {
  std::vector<key_version_status> out;
  for (const auto& row : tx.exec_params(key_status_sql, tenant.to_string())) {
    out.push_back({as_version(row[0]), row[1].as<std::string>(), row[2].as<std::string>(), row[3].as<std::int64_t>(),
                   row[4].as<std::int64_t>()});
  }
  return out;
}

std::vector<core::uuid> list_tenants(pool& connections) {
  auto lease = connections.checkout();
  pqxx::read_transaction tx(lease.connection(), "bankworker_list_tenants");
  std::vector<core::uuid> tenants;
  for (const auto& row : tx.exec_params(list_tenants_sql, limits::tenants_per_command_max)) {
    const auto id = core::uuid::parse(row[0].as<std::string>());
    BW_INVARIANT(id.has_value());
    tenants.push_back(*id);
  }
  return tenants;
}

}  // namespace bankworker::db
