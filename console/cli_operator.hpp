#pragma once
// The `operator` command group (console/cli_operator.cpp); listed in worker/cli.cpp's table.
#include <ostream>

#include "service/command.hpp"

namespace bankworker::console {

int command_operator(const service::parsed_args& parsed, const service::env_lookup& env, std::ostream& out);

}  // namespace bankworker::console
