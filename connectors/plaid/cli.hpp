#pragma once
// Plaid's CLI verbs (DESIGN.md §6), registered with the runtime through provider.cpp:
// `plaid link …` and `connections list|sync|revoke …` (cli.cpp says what each does).

#include <ostream>

#include "service/command.hpp"
#include "service/config.hpp"

namespace bankworker::plaid {

int command_plaid(const service::parsed_args& parsed, const service::env_lookup& env, std::ostream& out);
int command_connections(const service::parsed_args& parsed, const service::env_lookup& env, std::ostream& out);

}  // namespace bankworker::plaid
