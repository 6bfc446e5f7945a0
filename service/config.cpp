#include "service/config.hpp"

#include <unistd.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <fstream>

#include "core/limits.hpp"

namespace bankworker::service {

namespace {

constexpr std::string_view credentials_directory_variable = "CREDENTIALS_DIRECTORY";

bool parse_port(std::string_view text, std::uint16_t& port) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value == 0 || value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

// http:// is accepted only for loopback (the simulators); everything else must be https://.
std::optional<std::string> check_base_url(std::string_view url) {
  if (url.starts_with("https://") && url.size() > 8) return std::nullopt;
  if (url.starts_with("http://127.") || url.starts_with("http://localhost:") || url.starts_with("http://localhost/") ||
      url == "http://localhost" || url.starts_with("http://[::1]")) {
    return std::nullopt;
  }
  return "must be an https:// URL (plain http only for 127.0.0.0/8, localhost or [::1])";
}

bool is_ip_literal(const std::string& host, int family) {
  unsigned char buffer[sizeof(struct in6_addr)];
  return ::inet_pton(family, host.c_str(), buffer) == 1;
}

}  // namespace

env_reader::env_reader(const env_lookup& env, std::vector<std::string>& problems) : env_(env), problems_(problems) {}

std::optional<std::string> env_reader::get(std::string_view name) {
  std::optional<std::string> value = env_(name);
  if (value && value->empty()) return std::nullopt;  // set but empty counts as unset
  if (value && value->size() > limits::env_value_bytes_max) {
    problem(name, "longer than env_value_bytes_max (" + std::to_string(limits::env_value_bytes_max) + " bytes)");
    return std::nullopt;
  }
  return value;
}

void env_reader::problem(std::string_view name, std::string_view what) {
  problems_.push_back(std::string(name) + ": " + std::string(what));
}

crypto::secret env_reader::secret_from(std::string_view name, std::string_view credential) {
  const std::string file_name = std::string(name) + "_FILE";
  std::optional<std::string> inline_value = get(name);
  const std::optional<std::string> file = get(file_name);
  if (inline_value && file) {
    problem(name, "set both " + std::string(name) + " and " + file_name + "; keep one");
    return {};
  }
  if (inline_value) {
    crypto::secret value = crypto::secret::copy_of(*inline_value);
    std::fill(inline_value->begin(), inline_value->end(), '\0');
    return value;
  }
  std::optional<std::filesystem::path> path;
  if (file) path = *file;
  if (!path) {
    if (const auto directory = get(credentials_directory_variable)) {
      const std::filesystem::path candidate = std::filesystem::path(*directory) / std::string(credential);
      std::error_code ignored;
      if (std::filesystem::exists(candidate, ignored)) path = candidate;
    }
  }
  if (!path) return {};
  try {
    return crypto::read_secret_file(*path);
  } catch (const crypto::secret_file_error& error) {
    problem(file ? std::string_view(file_name) : name, error.what());
    return {};
  }
}

std::optional<std::filesystem::path> env_reader::readable_file(std::string_view name) {
  const std::optional<std::string> value = get(name);
  if (!value) return std::nullopt;
  if (::access(value->c_str(), R_OK) != 0) {
    problem(name, "cannot read " + *value + ": " + std::strerror(errno));
    return std::nullopt;
  }
  return std::filesystem::path(*value);
}

std::optional<std::filesystem::path> env_reader::readable_file(std::string_view name, std::string_view credential) {
  if (get(name)) return readable_file(name);
  const auto directory = get(credentials_directory_variable);
  if (!directory) return std::nullopt;
  std::filesystem::path candidate = std::filesystem::path(*directory) / std::string(credential);
  std::error_code ignored;
  if (!std::filesystem::exists(candidate, ignored)) return std::nullopt;
  return candidate;
}

std::optional<std::uint64_t> env_reader::whole_number(std::string_view name, std::uint64_t low, std::uint64_t high,
                                                     std::string_view expected) {
  const std::optional<std::string> text = get(name);
  if (!text) return std::nullopt;
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc{} || end != text->data() + text->size() || value < low || value > high) {
    problem(name, "expected " + std::string(expected) + ", got '" + *text + "'");
    return std::nullopt;
  }
  return value;
}

std::string env_reader::base_url(std::string_view name) {
  const std::optional<std::string> url = get(name);
  if (!url) return {};
  if (auto why = check_base_url(*url)) {
    problem(name, *why);
    return {};
  }
  return *url;
}

std::optional<listen_address> parse_listen_address(std::string_view text) {
  listen_address result;
  std::string_view port_text;
  if (text.starts_with('[')) {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    result.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
    if (!is_ip_literal(result.host, AF_INET6)) return std::nullopt;
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    result.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (result.host != "localhost" && !is_ip_literal(result.host, AF_INET)) return std::nullopt;
  }
  if (!parse_port(port_text, result.port)) return std::nullopt;
  return result;
}

std::optional<log_level> read_log_level_file(const std::filesystem::path& path, std::string& why) {
  // A level word is a few bytes; anything longer is not a level file, and the read is bounded.
  constexpr std::size_t log_level_file_bytes_max = 64;
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    why = "cannot read " + path.string() + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text(log_level_file_bytes_max + 1, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(file.gcount()));
  if (text.size() > log_level_file_bytes_max) {
    why = path.string() + " is longer than log_level_file_bytes_max (" + std::to_string(log_level_file_bytes_max) +
          " bytes); expected one of debug, info, warn, error";
    return std::nullopt;
  }
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  std::string_view word = text;
  while (!word.empty() && is_space(word.front())) word.remove_prefix(1);
  while (!word.empty() && is_space(word.back())) word.remove_suffix(1);
  if (auto level = parse_log_level(word)) return level;
  // A short lowercase word is a typo worth showing ("dbug"); anything else is not echoed, in case
  // the variable names the wrong file and that file holds a secret.
  constexpr std::size_t shown_bytes_max = 8;
  const bool word_like = word.size() <= shown_bytes_max &&
                         std::all_of(word.begin(), word.end(), [](char c) { return c >= 'a' && c <= 'z'; });
  why = path.string() + (word_like ? " holds '" + std::string(word) + "'" : std::string(" does not hold a level word")) +
        "; expected one of debug, info, warn, error";
  return std::nullopt;
}

env_lookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

// The database URL a command connects with. `migrate` takes BANKWORKER_MIGRATE_DATABASE_URL (the
// login that owns the schema) and falls back to BANKWORKER_DATABASE_URL; every other command takes
// BANKWORKER_DATABASE_URL, the runtime login. Each may also come from NAME_FILE or a systemd
// credential (migrate-database-url, database-url), so that neither password lives in an env file.
void load_database_url(env_reader& load, const settings_needs& needs, settings& s) {
  std::string_view name = "BANKWORKER_DATABASE_URL";
  crypto::secret url;
  if (needs.migrate) {
    url = load.secret_from("BANKWORKER_MIGRATE_DATABASE_URL", "migrate-database-url");
    if (!url.empty()) name = "BANKWORKER_MIGRATE_DATABASE_URL";
  }
  if (url.empty()) url = load.secret_from("BANKWORKER_DATABASE_URL", "database-url");
  if (url.empty()) {
    if (needs.database) load.problem(name, "required (e.g. postgresql://user@127.0.0.1:5432/bankworker)");
    return;
  }
  bool well_formed = false;
  {
    const crypto::secret::view view = url.reveal();
    const std::string_view text = view.text();
    well_formed = text.starts_with("postgresql://") || text.starts_with("postgres://") ||
                  text.find('=') != std::string_view::npos;
  }
  if (!well_formed) {
    load.problem(name, "expected postgresql://… or key=value connection string");
    return;
  }
  s.database_url = std::move(url);
}

// BANKWORKER_DATABASE_CONNECT_TIMEOUT: whole seconds, 1 to database_connect_timeout_max.
void load_connect_timeout(env_reader& load, settings& s) {
  const auto max_s = static_cast<std::uint64_t>(limits::database_connect_timeout_max.count());
  if (auto seconds = load.whole_number("BANKWORKER_DATABASE_CONNECT_TIMEOUT", 1, max_s,
                                       "whole seconds from 1 to database_connect_timeout_max (" +
                                           std::to_string(max_s) + ")")) {
    s.database_connect_timeout = std::chrono::seconds(*seconds);
  }
}

namespace {

// A host:port variable into `address`, which keeps its default when the variable is unset.
void load_listen_address(env_reader& load, std::string_view name, listen_address& address) {
  if (auto listen = load.get(name)) {
    if (auto parsed = parse_listen_address(*listen)) {
      address = *parsed;
    } else {
      load.problem(name, "expected host:port with an IP literal (127.0.0.1:8080, [::1]:8080), got '" + *listen + "'");
    }
  }
}

}  // namespace

namespace {

// The root key file (or the root-key credential), the previous root key, and Vault Transit.
void load_root_keys(env_reader& load, const settings_needs& needs, settings& s) {
  const bool root_key_named = load.get("BANKWORKER_ROOT_KEY_FILE").has_value();
  s.root_key_file = load.readable_file("BANKWORKER_ROOT_KEY_FILE", "root-key");
  s.root_key_previous_file = load.readable_file("BANKWORKER_ROOT_KEY_PREVIOUS_FILE");
  if (auto address = load.get("BANKWORKER_VAULT_ADDR")) {
    if (auto why = check_base_url(*address)) load.problem("BANKWORKER_VAULT_ADDR", *why);
    else s.vault_address = *address;
    s.vault_token = load.secret_from("BANKWORKER_VAULT_TOKEN", "vault-token");
    if (s.vault_token.empty()) {
      load.problem("BANKWORKER_VAULT_TOKEN", "required with BANKWORKER_VAULT_ADDR (or BANKWORKER_VAULT_TOKEN_FILE)");
    }
    if (auto mount = load.get("BANKWORKER_VAULT_TRANSIT_MOUNT")) s.vault_transit_mount = *mount;
    if (auto key = load.get("BANKWORKER_VAULT_TRANSIT_KEY")) s.vault_transit_key = *key;
  }
  if (needs.root_key && !root_key_named && !s.root_key_file && s.vault_address.empty()) {
    load.problem("BANKWORKER_ROOT_KEY_FILE", "required (or a root-key credential in $CREDENTIALS_DIRECTORY)");
  }
}

// Concurrency, drain timeout and job lease: whole numbers within their limits.
void load_job_limits(env_reader& load, settings& s) {
  if (auto value = load.whole_number("BANKWORKER_CONCURRENCY", 1, limits::concurrency_max,
                                     "a whole number from 1 to concurrency_max (" +
                                         std::to_string(limits::concurrency_max) + ")")) {
    s.concurrency = static_cast<std::uint32_t>(*value);
  }
  if (auto seconds = load.whole_number("BANKWORKER_DRAIN_TIMEOUT", 1, 600, "whole seconds from 1 to 600")) {
    s.drain_timeout = std::chrono::seconds(*seconds);
  }
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  if (auto lease_s = load.whole_number(
          "BANKWORKER_JOB_LEASE", static_cast<std::uint64_t>(duration_cast<seconds>(limits::job_lease_min).count()),
          static_cast<std::uint64_t>(duration_cast<seconds>(limits::job_lease_max).count()),
          "whole seconds from 1 to 3600")) {
    s.job_lease = seconds(*lease_s);
  }
}

void load_log_level(env_reader& load, settings& s) {
  if (auto text = load.get("BANKWORKER_LOG_LEVEL")) {
    if (auto level = parse_log_level(*text)) s.level = *level;
    else load.problem("BANKWORKER_LOG_LEVEL", "expected debug, info, warn or error, got '" + *text + "'");
  }
  if (auto path = load.get("BANKWORKER_LOG_LEVEL_FILE")) {
    std::string why;
    if (auto level = read_log_level_file(*path, why)) {
      s.level = *level;
      s.log_level_file = std::filesystem::path(*path);
    } else {
      load.problem("BANKWORKER_LOG_LEVEL_FILE", why);
    }
  }
}

}  // namespace

settings_result load_settings(const env_lookup& env, settings_needs needs) {
  settings_result result;
  settings& s = result.value;
  env_reader load(env, result.problems);
  load_database_url(load, needs, s);
  load_connect_timeout(load, s);
  load_listen_address(load, "BANKWORKER_HTTP_LISTEN", s.http_listen);
  load_listen_address(load, "BANKWORKER_ADMIN_LISTEN", s.admin_listen);
  load_root_keys(load, needs, s);
  load_job_limits(load, s);
  load_log_level(load, s);
  return result;
}

}  // namespace bankworker::service
