// `bankworker export --tenant T --format json|csv`: the tenant's books (ledger/export.hpp).
#include "core/uuid.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/export.hpp"
#include "worker/cli.hpp"
#include "service/command.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

int command_export(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 1, {"--tenant", "--format"});
  const auto tenant_text = parsed.option("--tenant");
  if (!tenant_text) throw usage_error{"export needs --tenant TENANT_ID"};
  const auto tenant = core::uuid::parse(*tenant_text);
  if (!tenant) throw usage_error{"--tenant must be a tenant id (a uuid)"};
  const std::string_view format_text = parsed.option("--format").value_or("json");
  ledger::export_format format;
  if (format_text == "json") format = ledger::export_format::json;
  else if (format_text == "csv") format = ledger::export_format::csv;
  else throw usage_error{"--format must be json or csv"};

  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  try {
    db::with_tenant(*connections, *tenant, [&](pqxx::work& tx) { ledger::export_books(tx, format, out); });
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("export", error);
  } catch (const std::runtime_error& error) {
    throw command_error{std::string(error.what()) + ": " + std::string(*tenant_text)};
  }
  return exit_ok;
}

}  // namespace bankworker::worker
