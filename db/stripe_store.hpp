#pragma once
// Storage the Stripe side needs beyond the inbox: the endpoint's signing secrets (sealed, one row
// each, several during a roll), stored events as the posting job reads them, and currencies.
// SQL only; connectors/stripe decides what the events mean.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/currency.hpp"
#include "core/uuid.hpp"
#include "crypto/secret.hpp"
#include "db/keys.hpp"

namespace bankworker::db {

// The subject every per-tenant webhook secret is sealed for (its associated data names it).
inline constexpr std::string_view stripe_endpoint_subject = "stripe.webhook_endpoint";

// Whether the transaction's tenant exists (and is active).
bool tenant_exists(pqxx::transaction_base& tx);

// Seals `secret` as a new active signing secret of the tenant's endpoint; returns its id.
core::uuid add_webhook_secret(pqxx::work& tx, key_store& keys, const core::uuid& tenant, const crypto::secret& secret,
                              std::string_view actor);
// Shreds one signing secret of the tenant's endpoint; false when it has no such secret.
bool remove_webhook_secret(pqxx::work& tx, key_store& keys, const core::uuid& tenant, const core::uuid& secret_id,
                           std::string_view actor);
// Opens every active signing secret of the tenant's endpoint (none: the endpoint is not set up).
std::vector<crypto::secret> load_webhook_secrets(pqxx::work& tx, key_store& keys, const core::uuid& tenant);

struct stored_event {
  std::string body;
  std::string state;  // received, posted, ignored, failed
};
std::optional<stored_event> load_event(pqxx::transaction_base& tx, std::string_view event_id);
void mark_event(pqxx::work& tx, std::string_view event_id, std::string_view state);

// Connect accounts (`bankworker stripe connect`). Each call runs in `tx`, scoped to the tenant.
//
// Maps `account` to the transaction's tenant. Takes the account's exclusive advisory lock first
// (held until `tx` ends), so no inbox transaction routes the account while it changes hands; see
// migration 0010. An account maps to one tenant only.
enum class account_claim {
  connected,          // newly mapped to this tenant
  already_connected,  // mapped to this tenant before: nothing changed
  other_tenant,       // mapped to another tenant: refused, nothing changed
};
account_claim claim_stripe_account(pqxx::work& tx, std::string_view account);

// Moves up to `events_max` unrouted events of `account` into the transaction's tenant inbox, oldest
// first, and returns the ids that were new there (an id the inbox already holds is dropped from
// the unrouted table as the duplicate it is). Call after claim_stripe_account in the same `tx`.
std::vector<std::string> move_unrouted_events(pqxx::work& tx, std::string_view account, std::size_t events_max);

// bankworker.currencies as a table for pure code.
core::currency_table load_currencies(pqxx::transaction_base& tx);

}  // namespace bankworker::db
