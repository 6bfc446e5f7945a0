#pragma once
// `bankworker run`: the long-running service (DESIGN.md §3). One io_context on a few threads,
// the database pool and its blocking thread pool, the dispatcher with its job handlers, the
// webhook inbox, the webhook server (/webhooks/stripe/{tenant}, /webhooks/plaid when Plaid is
// configured, and /webhooks/stripe when BANKWORKER_STRIPE_PLATFORM_SECRET_FILE is set; 404
// otherwise), the admin server on BANKWORKER_ADMIN_LISTEN (/healthz, /readyz, /metrics), and the
// database gauges read every few seconds (worker/database_gauges.hpp).
//
// Start-up refuses to run on an older or foreign schema, without a usable root key, or without
// the database. SIGTERM/SIGINT: STOPPING=1, stop accepting and claiming, drain in-flight jobs up
// to the drain timeout, release the rest, exit 0; a second signal exits at once. SIGHUP drops the
// cached webhook secrets (they reload on next use), resumes Plaid work paused for bad API keys, and
// re-reads the log level from BANKWORKER_LOG_LEVEL_FILE when set; connections stay open. Under
// systemd: READY=1 once serving, and WATCHDOG=1 while the event loop turns and the database answers.

#include "service/config.hpp"

namespace bankworker::worker {

using service::settings;

// Returns the process exit status; throws command_error for start-up failures.
int run_service(settings& config);

}  // namespace bankworker::worker
