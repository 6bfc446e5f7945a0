// The process entry point: initialise libsodium before any thread exists, keep secrets out of
// core dumps, set how the heap returns memory, then hand the arguments and the environment to the
// CLI. Nothing else lives here.

#include <malloc.h>
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

  // Each posting round and each inbox commit allocates a batch's worth (bodies, arrays, results:
  // a few MB) and frees it. With glibc's defaults (trim at 128 KiB of free top, larger blocks
  // mmapped) every round gave that memory back to the kernel and faulted it in again: under
  // webhook_load sysmalloc, madvise and page faults took about 9 % of the worker's CPU (perf).
  // A heap keeps up to 64 MiB free per arena now, and blocks up to 16 MiB come from it.
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::mallopt(M_MMAP_THRESHOLD, 16 << 20);

  std::vector<std::string_view> args(argv + 1, argv + argc);
  return bankworker::worker::run_cli(args, bankworker::service::process_environment(), std::cout, std::cerr);
}
