// `bankworker run`: configures every provider this binary was built with, then runs the service.

#include <memory>
#include <string>
#include <vector>

#include "service/command.hpp"
#include "service/provider.hpp"
#include "worker/cli.hpp"
#include "worker/runtime.hpp"

namespace bankworker::worker {

using service::config_error;
using service::env_lookup;
using service::expect_only;
using service::parsed_args;

int command_run(const parsed_args& parsed, const env_lookup& env, std::ostream&) {
  expect_only(parsed, 1, {});
  // Every problem at once: the runtime's settings and each provider's, one line each.
  service::settings_result loaded = service::load_settings(env, {.database = true, .root_key = true});
  std::vector<std::unique_ptr<service::provider>> providers = service::all_providers();
  service::env_reader reader(env, loaded.problems);
  for (const auto& provider : providers) provider->configure(reader);
  if (!loaded.problems.empty()) throw config_error{std::move(loaded.problems)};
  return run_service(loaded.value, std::move(providers));
}

}  // namespace bankworker::worker
