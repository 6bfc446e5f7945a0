// Currencies (issue #16): `currencies add CODE --exponent N` declares a currency that
// bankworker.currencies lacks, audited in every tenant's chain (db/currencies.hpp). Bank rows
// quarantined for it (bankworker.plaid_quarantine) are applied by their connection's next sync,
// which the declaration requests at once.
#include <charconv>
#include <string>

#include "db/currencies.hpp"
#include "service/command.hpp"
#include "worker/cli.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::open_key_store;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

constexpr std::string_view actor = "cli";

int exponent_option(const parsed_args& parsed) {
  const std::optional<std::string_view> text = parsed.option("--exponent");
  if (!text) throw usage_error{"--exponent N is required (digits after the decimal point of one unit, 0 to 18)"};
  int value = -1;
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc{} || end != text->data() + text->size() || value < 0 || value > core::currency_exponent_max) {
    throw usage_error{"--exponent must be a whole number from 0 to " + std::to_string(core::currency_exponent_max)};
  }
  return value;
}

int currencies_add(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 3, {"--exponent"});
  if (parsed.words.size() < 3) throw usage_error{"expected 'currencies add CODE --exponent N'"};
  const std::string code(parsed.words[2]);
  const int exponent = exponent_option(parsed);
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  db::currency_declared result;
  try {
    result = db::declare_currency(*connections, *keys, code, exponent, actor);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("currencies add", error);
  }
  if (parsed.json) {
    out << "{\"code\":\"" << code << "\",\"exponent\":" << exponent
        << ",\"declared\":" << (result.declared ? "true" : "false")
        << ",\"syncs_requested\":" << result.syncs_requested << "}\n";
    return exit_ok;
  }
  out << "currency " << code << (result.declared ? " declared" : " was declared already") << " (exponent "
      << exponent << "); " << result.syncs_requested
      << " connection(s) with rows quarantined for it sync now and apply them\n";
  return exit_ok;
}

}  // namespace

int command_currencies(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view verb = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view();
  if (verb != "add") throw usage_error{"expected 'currencies add CODE --exponent N'"};
  settings config = load_or_throw(env, {.database = true, .root_key = true});
  return currencies_add(parsed, config, out);
}

}  // namespace bankworker::worker
