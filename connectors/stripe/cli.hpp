#pragma once
// The `bankworker stripe …` verbs (cli.cpp): webhook secrets, Connect accounts, the API key, the
// inbox's events. The
// provider (provider.cpp) lends them to the runtime's command table.

#include <ostream>

#include "service/command.hpp"
#include "service/config.hpp"

namespace bankworker::stripe {

// `bankworker stripe secret add|remove|list`, `stripe connect`, `stripe key set`; the exit status.
int command_stripe(const service::parsed_args& parsed, const service::env_lookup& env, std::ostream& out);
// `bankworker stripe events list|retry` (cli_events.cpp).
int command_stripe_events(const service::parsed_args& parsed, const service::env_lookup& env, std::ostream& out);

}  // namespace bankworker::stripe
