// The process entry point: initialise libsodium before any thread exists, keep secrets out of
// core dumps, then hand the arguments and the environment to the CLI. Nothing else lives here.

#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdio>
#include <iostream>
#include <string_view>
#include <vector>

#include "worker/cli.hpp"

int main(int argc, char** argv) {
  if (sodium_init() < 0) {
    std::fputs("bankworker: libsodium failed to initialise\n", stderr);
    return 1;
  }
  // Secrets live in this process's memory: no core dumps, and no ptrace by other same-uid processes.
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  std::vector<std::string_view> args(argv + 1, argv + argc);
  return bankworker::worker::run_cli(args, bankworker::service::process_environment(), std::cout, std::cerr);
}
