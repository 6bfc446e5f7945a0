#pragma once
// Storage the Stripe side needs beyond the inbox: the endpoint's signing secrets (sealed, one row
// each, several during a roll), stored events as the posting job reads them, and currencies.
// SQL only; connectors/stripe decides what the events mean.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/currency.hpp"
#include "core/uuid.hpp"
#include "crypto/secret.hpp"
#include "db/keys.hpp"

namespace bankworker::stripe {

// The subject every per-tenant webhook secret is sealed for (its associated data names it).
inline constexpr std::string_view stripe_endpoint_subject = "stripe.webhook_endpoint";

// Whether the transaction's tenant exists (and is active).
bool tenant_exists(pqxx::transaction_base& tx);

// Seals `secret` as a new active signing secret of the tenant's endpoint; returns its id.
core::uuid add_webhook_secret(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant, const crypto::secret& secret,
                              std::string_view actor);
// Shreds one signing secret of the tenant's endpoint; false when it has no such secret.
bool remove_webhook_secret(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant, const core::uuid& secret_id,
                           std::string_view actor);
// What `stripe secret list` shows of one signing secret: never its material.
struct webhook_secret_info {
  core::uuid id;
  std::string created_at;                   // ISO 8601 UTC
  std::optional<std::string> rewrapped_at;  // the last `keys rewrap` that moved its data key
  std::int32_t key_version = 0;             // the tenant key version its data key is wrapped under
};
// The tenant's active signing secrets, newest first, at most stripe_endpoint_secrets_max.
std::vector<webhook_secret_info> list_webhook_secrets(pqxx::transaction_base& tx);
// Opens every active signing secret of the tenant's endpoint (none: the endpoint is not set up).
std::vector<crypto::secret> load_webhook_secrets(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant);

struct stored_event {
  std::string body;
  std::string state;  // received, fetching, posted, ignored, failed
  // Posted with a leg awaiting its balance transaction (migration 0043): a stripe.post with a key
  // completes it.
  bool settlement_awaited = false;
};
std::optional<stored_event> load_event(pqxx::transaction_base& tx, std::string_view event_id);
// The same for many events in one statement: the events found, by id. (Many events' new states
// are written with their settlement marks: settlement_marks::write.)
std::map<std::string, stored_event, std::less<>> load_events(pqxx::transaction_base& tx,
                                                             std::span<const std::string> event_ids);

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
// The tenant's own Stripe API key (a restricted key, DESIGN.md §1.3): one per tenant, sealed with
// this subject. Setting one shreds the one it replaces, in the same transaction.
inline constexpr std::string_view stripe_api_key_subject = "stripe.api";
core::uuid set_api_key(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant, const crypto::secret& key,
                       std::string_view actor);
// The tenant's key, opened; nothing when it has none.
std::optional<crypto::secret> load_api_key(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant);

// Which of `keys` (ch_…:fee, say) the tenant's ledger holds an entry under.
std::set<std::string, std::less<>> existing_entries(pqxx::transaction_base& tx, std::span<const std::string> keys);

// Missed-event recovery cursors (bankworker.stripe_event_cursors): `scope` is "tenant" for the
// tenant's own key or a connected account's acct_… id read with the platform key.
inline constexpr std::string_view tenant_event_scope = "tenant";
std::optional<std::string> load_event_cursor(pqxx::transaction_base& tx, std::string_view scope);
void save_event_cursor(pqxx::work& tx, std::string_view scope, std::string_view last_event_id,
                       std::int64_t recovered);
void delete_event_cursor(pqxx::work& tx, std::string_view scope);
// The tenant's mapped connected accounts, at most `accounts_max`, in a stable order.
std::vector<std::string> connected_accounts(pqxx::transaction_base& tx, std::size_t accounts_max);
// Enqueues one stripe.recover job per tenant with a key (0011_stripe_api.sql); returns how many.
std::size_t schedule_stripe_recovery(pqxx::work& tx, bool platform_key, std::uint32_t tenants_max);


}  // namespace bankworker::stripe
