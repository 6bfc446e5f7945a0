#pragma once
// Configuration from the environment (DESIGN.md §6), validated in one place at start-up. Only the
// wiring reads it; components get settings structs. Every problem is reported, one line each,
// naming the variable and never echoing a secret.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/limits.hpp"
#include "crypto/secret.hpp"
#include "service/log.hpp"

namespace bankworker::service {

struct listen_address {
  std::string host;  // an IPv4 or IPv6 literal, or "localhost"
  std::uint16_t port = 0;
};

std::optional<listen_address> parse_listen_address(std::string_view text);

struct settings {
  crypto::secret database_url;  // may carry a password
  // How long opening a database connection may take before the command gives up (libpq's
  // connect_timeout; BANKWORKER_DATABASE_CONNECT_TIMEOUT, seconds). A URL naming its own
  // connect_timeout keeps it.
  std::chrono::seconds database_connect_timeout = limits::database_connect_timeout_default;
  listen_address http_listen{"127.0.0.1", 8080};
  // /healthz, /readyz and /metrics, apart from the webhooks so the webhook port (often behind a
  // public proxy) exposes webhooks only; loopback by default, 8081 next to the webhook port.
  listen_address admin_listen{"127.0.0.1", 8081};
  std::optional<std::filesystem::path> root_key_file;
  // The root key being replaced, during a root rotation: still opens what it wrapped.
  std::optional<std::filesystem::path> root_key_previous_file;
  // A root key in Vault's Transit engine (connectors/vault); when set it is the primary root key
  // and the root key file, if any, only opens what it wrapped (until `keys rotate --root`).
  std::string vault_address;
  crypto::secret vault_token;
  std::string vault_transit_mount = "transit";
  std::string vault_transit_key = "bankworker-root";
  std::uint32_t concurrency = 8;
  // How long `run` lets in-flight jobs finish after SIGTERM before releasing their leases: below
  // systemd's TimeoutStopSec (35 s in systemd/bankworker.service).
  std::chrono::seconds drain_timeout{25};
  // How long a claimed job's lease lasts without a heartbeat: a job whose worker died runs again
  // within this plus the rescue interval (BANKWORKER_JOB_LEASE, seconds).
  std::chrono::seconds job_lease{60};
  log_level level = log_level::info;
  // BANKWORKER_LOG_LEVEL_FILE: a file holding one level word. A process's environment cannot
  // change, so this is how an operator changes the level of a running worker: edit the file, send
  // SIGHUP. When set, its level wins over BANKWORKER_LOG_LEVEL at start-up too.
  std::optional<std::filesystem::path> log_level_file;
};

// What the command about to run needs; absent optional settings are only checked when present.
struct settings_needs {
  bool database = false;
  // `migrate` only: the schema owner's login (BANKWORKER_MIGRATE_DATABASE_URL, falling back to
  // BANKWORKER_DATABASE_URL) instead of the runtime login.
  bool migrate = false;
  bool root_key = false;
};

// Looks an environment variable up; empty optional when unset.
using env_lookup = std::function<std::optional<std::string>(std::string_view name)>;
env_lookup process_environment();

struct settings_result {
  settings value;
  std::vector<std::string> problems;  // "BANKWORKER_X: what is wrong"; empty when valid
};

settings_result load_settings(const env_lookup& env, settings_needs needs);

// Reads environment variables for a settings loader (this file's, a provider's): unset and empty
// are the same, every value is bounded, and each problem is recorded as "NAME: what is wrong",
// never with a secret's value.
class env_reader {
 public:
  // `env` and `problems` outlive the reader.
  env_reader(const env_lookup& env, std::vector<std::string>& problems);

  std::optional<std::string> get(std::string_view name);
  void problem(std::string_view name, std::string_view what);
  // A secret from NAME, NAME_FILE or $CREDENTIALS_DIRECTORY/<credential>; at most one of the
  // first two. Empty when none is set.
  crypto::secret secret_from(std::string_view name, std::string_view credential);
  // A file that must exist and be readable now; its content is read later by its owner.
  std::optional<std::filesystem::path> readable_file(std::string_view name);
  // The file NAME names (as above) or, when NAME is unset, $CREDENTIALS_DIRECTORY/<credential>
  // when systemd handed that credential over (LoadCredential=); nothing when neither is there.
  // Under DynamicUser= a file elsewhere is unreadable to the service, so every secret file has one.
  std::optional<std::filesystem::path> readable_file(std::string_view name, std::string_view credential);
  // A whole number from `low` to `high`, or nothing and the problem "expected <expected>, got …".
  std::optional<std::uint64_t> whole_number(std::string_view name, std::uint64_t low, std::uint64_t high,
                                            std::string_view expected);
  // An https:// base URL (plain http only on loopback, for the simulators); empty when unset or
  // refused (then a problem is recorded).
  std::string base_url(std::string_view name);

 private:
  const env_lookup& env_;
  std::vector<std::string>& problems_;
};

// The level in a log level file: one word (debug, info, warn or error), surrounding white space
// ignored. On failure, nothing, and `why` says what is wrong (unreadable, too long, not a level)
// without naming the variable, so each caller can.
std::optional<log_level> read_log_level_file(const std::filesystem::path& path, std::string& why);

}  // namespace bankworker::service
