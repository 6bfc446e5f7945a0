// Plaid as a provider of the runtime (service/provider.hpp): its settings, CLI verbs, job
// handlers, webhook route, periodic syncs and connection gauges, wired on the runtime's parts.

#include <array>
#include <filesystem>
#include <optional>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "connectors/plaid/console_page.hpp"
#include "connectors/plaid/client.hpp"
#include "service/provider.hpp"
#include "connectors/plaid/cli.hpp"
#include "connectors/plaid/gauges.hpp"
#include "connectors/plaid/jobs.hpp"
#include "connectors/plaid/sync_schedule.hpp"
#include "connectors/plaid/webhooks.hpp"

namespace bankworker::plaid {

namespace {

namespace asio = boost::asio;

// The Plaid environment a base URL points at; it is bound into every sealed access token, so a
// token sealed for the sandbox never opens for production.
std::string plaid_environment(std::string_view base_url) {
  if (base_url.find("sandbox") != std::string_view::npos) return "sandbox";
  if (base_url.find("development") != std::string_view::npos) return "development";
  if (connectors::http::client::url_allowed(base_url) && base_url.starts_with("http://")) return "sandbox";
  return "production";
}

// The webhook route's key fetcher: Plaid's /webhook_verification_key/get. An unknown kid is an
// answer (nothing); anything else that went wrong throws, and the route answers 503.
asio::awaitable<std::optional<verification_key>> fetch_key(const client* api, std::string kid) {
  result<verification_key> fetched = co_await api->get_webhook_verification_key(std::move(kid));
  if (fetched.ok()) co_return std::move(fetched.value);
  if (fetched.failure.kind == error_class::invalid_request) co_return std::nullopt;
  throw std::runtime_error("Plaid's verification key could not be fetched: " +
                           std::string(to_string(fetched.failure.kind)));
}

constexpr std::string_view connection_lines =
    "  --tenant T         the tenant\n  --connection C     the connection's id\n"
    "  --wait             wait for the job to finish and print its outcome\n";

class plaid_provider final : public service::provider {
 public:
  std::string_view name() const noexcept override { return "plaid"; }

  std::vector<std::string> job_kinds() const override {
    return {std::string(plaid_link_kind), std::string(plaid_sync_kind),
            std::string(plaid_revoke_kind)};
  }

  std::vector<service::command_group> commands() const override {
    return {{"plaid",
             command_plaid,
             {{"plaid", "link ...", "Plaid items", ""},
              {"plaid link", "--tenant T --public-token P [--wait]",
               "exchange a Plaid public token for a new bank connection",
               "  --tenant T         the tenant\n  --public-token P   the token from Plaid Link\n"
               "  --wait             wait for the job to finish and print its outcome\n"}}},
            {"connections",
             command_connections,
             {{"connections", "list|sync|revoke ...", "bank connections", ""},
              {"connections list", "[--tenant T] [--status S]",
               "bank connections, their status and last error: one tenant's, or every tenant's (each line then "
               "starts with it)",
               "  --tenant T         one tenant (default: every tenant)\n"
               "  --status S         linking, active, needs_reauth, broken, revoking or revoked only\n"},
              {"connections sync", "--tenant T --connection C [--wait]", "enqueue a sync of one connection",
               connection_lines},
              {"connections revoke", "--tenant T --connection C [--wait]",
               "revoke a connection: remove the Plaid item, then shred its token", connection_lines}}}};
  }

  void configure(service::env_reader& env) override {
    base_url_ = env.base_url("BANKWORKER_PLAID_BASE_URL");
    if (auto id = env.get("BANKWORKER_PLAID_CLIENT_ID")) client_id_ = *id;
    secret_ = env.secret_from("BANKWORKER_PLAID_SECRET", "plaid-secret");
    secret_source_ = secret_file_of(env);
  }

  bool configured() const noexcept override {
    return !base_url_.empty() && !client_id_.empty() && !secret_.empty();
  }

  std::vector<const crypto::secret*> log_secrets() const override { return {&secret_}; }

  // Without its settings Plaid still schedules periodic syncs (a process that has them runs them)
  // and shows its connection gauges; handlers and the webhook route need the API.
  service::provider_parts start(service::runtime_parts parts) override {
    schedule_ = std::make_unique<sync_schedule>(parts.connections, parts.log);
    gauges_ = std::make_unique<connection_gauges>(parts.metrics);
    service::provider_parts out;
    out.tasks.push_back({"plaid.schedule_syncs", std::chrono::milliseconds(0),
                         [this](const std::optional<std::string>& now) { return schedule_->run(now).backlog; }});
    out.gauges = gauges_->gauges();
    out.admin_pages.push_back(connections_console_page(parts.connections));
    if (configured()) start_api(parts, out);
    return out;
  }

  // SIGHUP: the secret is read again from its file (a bad one keeps the old, with a warning that
  // names the variable), then syncs paused by a rejected client secret resume.
  void reload() override {
    if (api_ && secret_source_) reload_secret();
    if (handlers_) handlers_->resume();
  }

  void stop() override {
    if (hooks_) hooks_->stop_key_refresh();
  }

 private:
  void start_api(service::runtime_parts& parts, service::provider_parts& out) {
    client_settings client_config;
    client_config.base_url = base_url_;
    log_ = &parts.log;
    api_ = std::make_unique<client>(parts.http, parts.currencies, client_config, crypto::secret::copy_of(client_id_),
                                    crypto::secret::copy_of(secret_.reveal().text()));
    plaid_job_settings jobs_config;
    jobs_config.environment = plaid_environment(base_url_);
    handlers_ = std::make_unique<plaid_jobs>(parts.connections, parts.keys, *api_, parts.metrics, parts.log,
                                                     jobs_config);
    const client* api = api_.get();
    hooks_ = std::make_unique<plaid_webhooks>(
        parts.connections, parts.keys, parts.blocking, parts.metrics, parts.log,
        [api](std::string kid) { return fetch_key(api, std::move(kid)); }, plaid_webhook_settings{});
    asio::co_spawn(parts.io, hooks_->run_key_refresh(), asio::detached);
    out.handlers = {{std::string(plaid_link_kind), handlers_->link_handler()},
                    {std::string(plaid_sync_kind), handlers_->sync_handler()},
                    {std::string(plaid_revoke_kind), handlers_->revoke_handler()}};
    out.routes.push_back(hooks_->route());
  }

  // Where the secret was read from, when a file: read again on SIGHUP.
  struct secret_file {
    std::string variable;  // BANKWORKER_PLAID_SECRET_FILE, or $CREDENTIALS_DIRECTORY/plaid-secret
    std::filesystem::path path;
  };

  static std::optional<secret_file> secret_file_of(service::env_reader& env) {
    if (env.get("BANKWORKER_PLAID_SECRET")) return std::nullopt;  // inline: nothing to re-read
    if (auto file = env.get("BANKWORKER_PLAID_SECRET_FILE")) return secret_file{"BANKWORKER_PLAID_SECRET_FILE", *file};
    const auto directory = env.get("CREDENTIALS_DIRECTORY");
    if (!directory) return std::nullopt;
    const std::filesystem::path path = std::filesystem::path(*directory) / "plaid-secret";
    std::error_code ignored;
    if (!std::filesystem::exists(path, ignored)) return std::nullopt;
    return secret_file{"$CREDENTIALS_DIRECTORY/plaid-secret", path};
  }

  // Reads the secret file again and hands the secret to the client for the requests that start
  // from now on. The log's scrub list keeps the start-up secret (the logger holds its address);
  // the client redacts the current one from everything Plaid answers.
  void reload_secret() {
    try {
      crypto::secret fresh = crypto::read_secret_file(secret_source_->path);
      if (!plausible_secret(fresh)) throw crypto::secret_file_error("not a Plaid secret (printable characters only)");
      api_->replace_secret(std::move(fresh));
      log_->info("Plaid secret read again", {{"variable", secret_source_->variable}});
    } catch (const crypto::secret_file_error& error) {
      log_->warn("Plaid secret not reloaded: the previous one stays in use",
                 {{"variable", secret_source_->variable}, {"error", std::string(error.what())}});
    }
  }

  // Plaid's secrets are short runs of letters and digits; a file holding a line break inside,
  // white space or control bytes is a mistake, not a secret.
  static bool plausible_secret(const crypto::secret& candidate) {
    const crypto::secret::view view = candidate.reveal();
    const std::string_view text = view.text();
    if (text.empty()) return false;
    for (const char c : text) {
      if (c <= ' ' || c > '~') return false;
    }
    return true;
  }

  std::string base_url_;
  std::string client_id_;
  crypto::secret secret_;
  std::optional<secret_file> secret_source_;
  service::logger* log_ = nullptr;
  std::unique_ptr<client> api_;
  std::unique_ptr<plaid_jobs> handlers_;
  std::unique_ptr<plaid_webhooks> hooks_;
  std::unique_ptr<sync_schedule> schedule_;
  std::unique_ptr<connection_gauges> gauges_;
};

}  // namespace

std::unique_ptr<service::provider> make_provider() { return std::make_unique<plaid_provider>(); }

}  // namespace bankworker::plaid
