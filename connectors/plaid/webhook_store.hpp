#pragma once
// What a verified Plaid webhook changes (DESIGN.md §1.1, §1.4; issue #5): finding the connections
// that hold an item across tenants, and the three effects, each in the caller's transaction.
// SQL only; connectors/plaid/webhooks decides which effect a webhook has.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "connectors/plaid/connection_status.hpp"
#include "core/uuid.hpp"
#include "db/keys.hpp"

namespace bankworker::plaid {

struct item_connection {
  core::uuid tenant;
  core::uuid connection;
  connection_status status = connection_status::linking;
};

// Every connection holding Plaid `item_id`, in any tenant (through the SECURITY DEFINER function
// bankworker.plaid_item_connection; `tx` needs no tenant scope). At most 16.
std::vector<item_connection> find_item_connections(pqxx::transaction_base& tx, std::string_view item_id);

// The effects, in a transaction scoped to the connection's tenant. Each returns whether it changed
// anything (false: the connection is in a state where the effect does not apply).
//
// request_sync for a connection that is not revoking or revoked (one waiting job per connection).
bool request_connection_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection);
// active → needs_reauth with last_error naming `error_code`, plus an audit row; only from active.
bool mark_connection_needs_reauth(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                                  const core::uuid& connection, std::string_view error_code);
// request_revoke for a connection that is not revoked yet (one waiting job per connection).
bool request_connection_revoke(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection);

}  // namespace bankworker::plaid
