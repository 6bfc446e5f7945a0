#pragma once
// The one help table of the `bankworker` command line: every command and subcommand has one entry,
// and `--help`, the man page (`bankworker man`) and the bash completion (`bankworker completion
// bash`) are all printed from it, so they cannot disagree.

#include <ostream>
#include <span>
#include <string_view>

#include "service/command.hpp"

namespace bankworker::worker {

using service::command_help;

std::span<const command_help> command_helps();

// The entry for the longest leading run of `words` that names one ("jobs list ID" → "jobs list"),
// or nullptr when the first word is no command.
const command_help* find_command_help(std::span<const std::string_view> words);

void print_usage(std::ostream& out);
void print_command_help(const command_help& help, std::ostream& out);
void print_man_page(std::ostream& out);
void print_bash_completion(std::ostream& out);

}  // namespace bankworker::worker
