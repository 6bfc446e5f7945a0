#pragma once
// The one way to touch tenant data: a transaction scoped to one tenant. It starts with
// SET LOCAL bankworker.tenant_id (through set_config(…, true), so the id is a parameter), which
// every tenant table's row-level security policy reads; the setting ends with the transaction,
// so a pooled connection never carries one tenant's scope into the next transaction.
//
// Failures keep their meaning for the caller (STYLE.md §3): pqxx::in_doubt_error means the commit
// may have landed (look the effect up by its idempotency key) — that includes a commit the server
// acknowledged without its synchronous standby (db::replication_in_doubt, pool::lease::commit);
// pqxx::broken_connection means it did not start or did not commit. Both close the connection
// rather than reuse it.

#include <type_traits>
#include <utility>


#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/pool.hpp"

namespace bankworker::db {

template <class Work>
auto with_tenant(pool& connections, const core::uuid& tenant, Work&& work)
    -> std::invoke_result_t<Work&, pqxx::work&> {
  pool::lease lease = connections.checkout();
  try {
    pqxx::work tx(lease.connection(), "bankworker_tenant");
    tx.exec_prepared(set_tenant_statement, tenant.to_string());
    if constexpr (std::is_void_v<std::invoke_result_t<Work&, pqxx::work&>>) {
      work(tx);
      lease.commit(tx);
    } else {
      auto result = work(tx);
      lease.commit(tx);
      return result;
    }
  } catch (const pqxx::in_doubt_error&) {
    lease.discard();
    throw;
  } catch (const pqxx::broken_connection&) {
    lease.discard();
    throw;
  }
}

}  // namespace bankworker::db
