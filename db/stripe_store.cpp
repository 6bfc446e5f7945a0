#include "db/stripe_store.hpp"

#include "core/limits.hpp"
#include "crypto/random.hpp"

namespace bankworker::db {

namespace {

constexpr const char* tenant_exists_sql = "SELECT count(*) FROM bankworker.tenants WHERE status = 'active'";
constexpr const char* webhook_secret_ids_sql =
    "SELECT secret_id::text FROM bankworker.sealed_secrets WHERE purpose = 'stripe.webhook_secret'"
    " AND subject_id = $1 ORDER BY created_at DESC LIMIT $2";
constexpr const char* is_webhook_secret_sql =
    "SELECT 1 FROM bankworker.sealed_secrets WHERE secret_id = $1::text::uuid AND purpose = 'stripe.webhook_secret'";
constexpr const char* load_event_sql = "SELECT body::text, state FROM bankworker.stripe_events WHERE event_id = $1";
constexpr const char* mark_event_sql =
    "UPDATE bankworker.stripe_events SET state = $2, posted_at = CASE WHEN $2 = 'posted' THEN now() END"
    " WHERE event_id = $1";
constexpr const char* currencies_sql = "SELECT code, exponent, iso FROM bankworker.currencies";

}  // namespace

bool tenant_exists(pqxx::transaction_base& tx) { return tx.exec1(tenant_exists_sql)[0].as<int>() > 0; }

core::uuid add_webhook_secret(pqxx::work& tx, key_store& keys, const core::uuid& tenant, const crypto::secret& secret,
                              std::string_view actor) {
  const core::uuid id = crypto::random_uuid();
  keys.seal_secret(tx,
                   {.purpose = crypto::secret_purpose::stripe_webhook_secret,
                    .tenant = tenant,
                    .secret_id = id,
                    .subject_id = std::string(stripe_endpoint_subject),
                    .environment = {}},
                   secret, actor);
  return id;
}

bool remove_webhook_secret(pqxx::work& tx, key_store& keys, const core::uuid& tenant, const core::uuid& secret_id,
                           std::string_view actor) {
  if (tx.exec_params(is_webhook_secret_sql, secret_id.to_string()).empty()) return false;
  return keys.shred_secret(tx, tenant, secret_id, actor);
}

std::vector<crypto::secret> load_webhook_secrets(pqxx::work& tx, key_store& keys, const core::uuid& tenant) {
  std::vector<crypto::secret> secrets;
  const auto rows = tx.exec_params(webhook_secret_ids_sql, std::string(stripe_endpoint_subject),
                                   static_cast<long>(limits::stripe_endpoint_secrets_max));
  for (const auto& row : rows) {
    const auto id = core::uuid::parse(row[0].as<std::string>());
    secrets.push_back(keys.open_secret(tx, {.purpose = crypto::secret_purpose::stripe_webhook_secret,
                                            .tenant = tenant,
                                            .secret_id = *id,
                                            .subject_id = std::string(stripe_endpoint_subject),
                                            .environment = {}}));
  }
  return secrets;
}

std::optional<stored_event> load_event(pqxx::transaction_base& tx, std::string_view event_id) {
  const auto rows = tx.exec_params(load_event_sql, std::string(event_id));
  if (rows.empty()) return std::nullopt;
  return stored_event{rows[0][0].as<std::string>(), rows[0][1].as<std::string>()};
}

void mark_event(pqxx::work& tx, std::string_view event_id, std::string_view state) {
  tx.exec_params0(mark_event_sql, std::string(event_id), std::string(state));
}

core::currency_table load_currencies(pqxx::transaction_base& tx) {
  std::vector<core::currency> currencies;
  for (const auto& row : tx.exec(currencies_sql)) {
    currencies.push_back({row[0].as<std::string>(), row[1].as<int>(), row[2].as<bool>()});
  }
  return core::currency_table(std::move(currencies));
}

}  // namespace bankworker::db
