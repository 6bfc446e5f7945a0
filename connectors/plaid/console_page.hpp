#pragma once
// Plaid's page in the operator console (service/admin_page.hpp): a tenant's bank connections by
// status, with last and next sync and the last error, and a button that requests a sync; plus
// the overview's connection counts.
#include "db/pool.hpp"
#include "service/admin_page.hpp"

namespace bankworker::plaid {

// `connections` outlives the page.
service::admin_page connections_console_page(db::pool& connections);

}  // namespace bankworker::plaid
