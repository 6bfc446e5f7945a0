#pragma once
// Stripe's page in the operator console (service/admin_page.hpp): a tenant's webhook inbox, the
// recent events with the unposted and failed ones first, a button that posts a failed event
// again; plus the overview's inbox backlog.
#include "db/pool.hpp"
#include "service/admin_page.hpp"

namespace bankworker::stripe {

// `connections` outlives the page.
service::admin_page inbox_console_page(db::pool& connections);

}  // namespace bankworker::stripe
