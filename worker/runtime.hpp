#pragma once
// `bankworker run`: the long-running service (DESIGN.md §3). One io_context on a few threads,
// the database pool and its blocking thread pool, the dispatcher, the scheduler and the database
// gauges (worker/database_gauges.hpp), every configured provider plugged into them through
// service/provider.hpp (job handlers, webhook routes, notification channels, periodic tasks,
// gauges), the webhook server with the providers' routes, and the admin server on
// BANKWORKER_ADMIN_LISTEN (/healthz, /readyz, /metrics).
//
// Start-up refuses to run on an older or foreign schema, without a usable root key, or without
// the database. SIGTERM/SIGINT: STOPPING=1, stop accepting and claiming, drain in-flight jobs up
// to the drain timeout, release the rest, exit 0; a second signal exits at once. SIGHUP asks every
// provider to reload (Stripe drops its cached webhook secrets, Plaid resumes work paused for bad
// API keys) and re-reads the log level from BANKWORKER_LOG_LEVEL_FILE when set; connections stay
// open. Under
// systemd: READY=1 once serving, and WATCHDOG=1 while the event loop turns and the database answers.

#include <memory>
#include <vector>

#include "service/config.hpp"
#include "service/provider.hpp"

namespace bankworker::worker {

using service::settings;

// Runs with `providers` already configured (service::provider::configure); returns the process
// exit status; throws command_error for start-up failures.
int run_service(settings& config, std::vector<std::unique_ptr<service::provider>> providers);

}  // namespace bankworker::worker
