// Catch2's main, after the one process-wide set-up the code under test relies on.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <sodium.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (sodium_init() < 0) {
    std::fputs("libsodium failed to initialise\n", stderr);
    return 1;
  }
  return Catch::Session().run(argc, argv);
}
