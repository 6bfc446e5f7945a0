#pragma once
// The `bankworker` command line (DESIGN.md §6). Output goes to `out`; a failure prints one line,
// "bankworker: <reason>", to `err` and returns a non-zero exit status:
//   0 done · 1 the command failed (database unreachable, migration refused, …) ·
//   2 bad usage · 78 bad configuration (one line per problem).

#include <ostream>
#include <span>
#include <string_view>

#include "service/command.hpp"
#include "service/config.hpp"

namespace bankworker::worker {

using service::parsed_args;
using service::env_lookup;

using service::exit_ok;
using service::exit_failed;
using service::exit_usage;
using service::exit_config;

// `args` excludes the program name. sodium_init must have run.
int run_cli(std::span<const std::string_view> args, const env_lookup& env, std::ostream& out, std::ostream& err);

using service::env_lookup;
using service::parsed_args;

// The commands of the table in cli.cpp, each in its own cli_*.cpp.
int command_migrate(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_tenant(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_export(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_keys(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_audit(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_jobs(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_run(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_scope_key(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_currencies(const parsed_args& parsed, const env_lookup& env, std::ostream& out);
int command_reconcile(const parsed_args& parsed, const env_lookup& env, std::ostream& out);

}  // namespace bankworker::worker
