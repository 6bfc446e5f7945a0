// Stripe as a provider of the runtime (service/provider.hpp): its settings, CLI verbs, webhook
// routes and inbox, the posters that take the inbox into the ledger, the stripe.post jobs (events
// that need the API) and API jobs, missed-event recovery and inbox gauges, wired on the runtime's
// parts.

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "connectors/stripe/api_client.hpp"
#include "connectors/stripe/api_jobs.hpp"
#include "connectors/stripe/cli.hpp"
#include "connectors/stripe/console_page.hpp"
#include "connectors/stripe/gauges.hpp"
#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/intake.hpp"
#include "connectors/stripe/poster.hpp"
#include "connectors/stripe/signature.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "service/provider.hpp"

namespace bankworker::stripe {

namespace {

constexpr std::chrono::milliseconds recovery_interval{15 * 60'000};

// The Connect platform endpoint's signing secret, read into guarded memory. A file that is
// unreadable, too open or holds no whsec_ secret stops start-up: a platform endpoint that verifies
// nothing would answer 400 to every Connect delivery until Stripe gives up.
crypto::secret read_platform_secret(const std::filesystem::path& file) {
  try {
    crypto::secret secret = crypto::read_secret_file(file, crypto::file_permissions::owner_or_group_only);
    if (!looks_like_webhook_secret(secret.reveal().text())) {
      throw service::command_error{
          "BANKWORKER_STRIPE_PLATFORM_SECRET_FILE does not hold a Stripe webhook signing secret (whsec_…)"};
    }
    return secret;
  } catch (const crypto::secret_file_error& error) {
    throw service::command_error{std::string("BANKWORKER_STRIPE_PLATFORM_SECRET_FILE: ") + error.what()};
  }
}

class stripe_provider final : public service::provider {
 public:
  std::string_view name() const noexcept override { return "stripe"; }

  std::vector<std::string> job_kinds() const override {
    return {std::string(stripe::stripe_post_kind), std::string(stripe::stripe_recover_kind)};
  }

  std::vector<service::command_group> commands() const override {
    return {{"stripe",
             stripe::command_stripe,
             {{"stripe", "secret|connect|key|events ...", "Stripe webhook secrets, Connect accounts, API keys, events", ""},
              {"stripe secret", "add|remove|list ...", "the tenant's webhook endpoint secrets", ""},
              {"stripe secret add", "--tenant T --secret-file F", "add a webhook endpoint secret (whsec_…) for the tenant",
               "  --tenant T         the tenant\n  --secret-file F    a file holding the secret\n"},
              {"stripe secret remove", "--tenant T --id S", "remove (shred) one of the tenant's webhook secrets",
               "  --tenant T         the tenant\n  --id S             the secret's id\n"},
              {"stripe secret list", "--tenant T",
               "the tenant's active webhook secrets: ids, dates, key versions (never the secrets)",
               "  --tenant T         the tenant's id (a uuid)\n"},
              {"stripe connect", "--tenant T --account acct_…",
               "map a Connect account to the tenant; its unrouted events move in",
               "  --tenant T         the tenant\n  --account A        the Connect account id\n"},
              {"stripe events", "list|retry ...", "the tenant's received Stripe events and their postings", ""},
              {"stripe events list", "--tenant T [--failed|--unposted|--awaiting-settlement] [--limit N]",
               "the tenant's events, newest first: state, attempts, next retry, last error, the legs awaiting "
               "settlement (never a body)",
               "  --tenant T         the tenant\n  --failed           only dead-lettered postings\n"
               "  --unposted         only events not yet posted\n"
               "  --awaiting-settlement  only events posted without a leg's balance transaction\n"
               "  --limit N          at most N (1-1000, default 100)\n"},
              {"stripe events retry", "--tenant T --id evt_…",
               "give a dead-lettered event back to the posters, its attempts cleared (audited)",
               "  --tenant T         the tenant\n  --id E             the Stripe event id\n"},
              {"stripe key", "set ...", "the tenant's Stripe API key", ""},
              {"stripe key set", "--tenant T --key-file F", "store the tenant's Stripe API key, sealed",
               "  --tenant T         the tenant\n  --key-file F       a file holding the key\n"}}}};
  }

  void configure(service::env_reader& env) override {
    api_base_url_ = env.base_url("BANKWORKER_STRIPE_API_BASE_URL");
    platform_secret_file_ = env.readable_file("BANKWORKER_STRIPE_PLATFORM_SECRET_FILE", "stripe-platform-secret");
    api_key_file_ = env.readable_file("BANKWORKER_STRIPE_API_KEY_FILE", "stripe-api-key");
  }

  // Webhooks and postings need no setting of their own: the tenants' secrets are in the database.
  bool configured() const noexcept override { return true; }

  service::provider_parts start(service::runtime_parts parts) override {
    std::optional<crypto::secret> platform_secret;
    if (platform_secret_file_) platform_secret = read_platform_secret(*platform_secret_file_);
    // The inbox is the posters' queue: each commit that stored an event wakes them.
    poster_settings posting;
    posting.api_configured = !api_base_url_.empty();
    poster_ = std::make_unique<stripe::poster>(parts.connections, parts.currencies, parts.log, &parts.metrics, posting);
    stripe::poster* posters = poster_.get();
    // What the posting rules settle from an event's body is posted as the inbox stores it; the
    // rest wakes the posters (intake.hpp).
    intake_ = std::make_unique<stripe::intake_planner>(
        parts.currencies, parts.log, posting.api_configured,
        [posters](const stripe::poster_counts& counts) { posters->count(counts); });
    stripe::inbox_settings inbox_settings;
    inbox_settings.post_at_intake = intake_.get();
    inbox_ = std::make_unique<stripe::inbox>(parts.connections, inbox_settings, stripe::inbox_hook{},
                                             [posters](std::span<const stripe::tenant_lane> lanes) { posters->wake(lanes); });
    service::provider_parts out;
    // The API (fees, missed-event recovery) only with BANKWORKER_STRIPE_API_BASE_URL; without it
    // events post gross only and no recovery runs.
    if (!api_base_url_.empty()) start_api(parts, out);
    out.handlers.push_back({std::string(stripe::stripe_post_kind),
                            stripe::stripe_post_handler(parts.connections, parts.currencies, api_jobs_.get(), &parts.log)});
    webhooks_ = std::make_unique<stripe::stripe_webhooks>(parts.connections, parts.keys, *inbox_, parts.blocking,
                                                          parts.metrics, parts.log, stripe::stripe_webhook_settings{});
    out.routes.push_back(webhooks_->tenant_route());
    out.admin_pages.push_back(inbox_console_page(parts.connections));
    if (platform_secret) {
      out.routes.push_back(webhooks_->platform_route(std::move(*platform_secret)));
      out.status_lines.push_back("Stripe Connect platform endpoint on: POST /webhooks/stripe");
    } else {
      out.status_lines.push_back("Stripe Connect platform endpoint off (neither BANKWORKER_STRIPE_PLATFORM_SECRET_FILE "
                                 "nor a stripe-platform-secret credential): POST /webhooks/stripe answers 404");
    }
    // A webhook secret added or removed anywhere (migration 0027) drops that tenant's cache entry
    // here within the notification's delivery; while the listen connection was down anything may
    // have changed, so every entry is dropped when it is back.
    stripe::stripe_webhooks* hooks = webhooks_.get();
    out.channels.push_back({.channel = std::string(stripe::stripe_secret_channel),
                            .on_payload = [hooks](const std::string& tenant) { hooks->forget_notified(tenant); },
                            .on_listening = [hooks] { hooks->forget_secrets(); }});
    gauges_ = std::make_unique<stripe::inbox_gauges>(parts.metrics);
    out.gauges.push_back(gauges_->gauge());
    settlement_gauges_ = std::make_unique<stripe::settlement_gauges>(parts.metrics);
    out.gauges.push_back(settlement_gauges_->gauge());
    return out;
  }

  // SIGHUP: webhook secrets are read again from the database.
  void reload() override {
    if (webhooks_) webhooks_->forget_secrets();
  }

  // The first SIGTERM: each poster finishes the batch in hand (it commits or rolls back whole).
  void stop() override {
    if (poster_) poster_->stop();
  }

 private:
  void start_api(service::runtime_parts& parts, service::provider_parts& out) {
    api_settings api_config;
    api_config.base_url = api_base_url_;
    api_ = std::make_unique<api_client>(parts.http, api_config);
    crypto::secret platform_key;
    if (api_key_file_) {
      platform_key = crypto::read_secret_file(*api_key_file_, crypto::file_permissions::owner_or_group_only);
    }
    api_jobs_ = std::make_unique<stripe::stripe_api_jobs>(parts.connections, parts.keys, *inbox_, *api_,
                                                          parts.currencies, std::move(platform_key), parts.log,
                                                          stripe::stripe_api_job_settings{});
    api_jobs_->set_metrics(parts.metrics);
    out.handlers.push_back({std::string(stripe::stripe_recover_kind), api_jobs_->recover_handler()});
    out.tasks.push_back(stripe::stripe_recovery_task(parts.connections, api_jobs_->has_platform_key(), recovery_interval));
  }

  std::string api_base_url_;
  std::optional<std::filesystem::path> platform_secret_file_;
  std::optional<std::filesystem::path> api_key_file_;
  std::unique_ptr<stripe::poster> poster_;  // before inbox_: the inbox wakes it until destroyed
  std::unique_ptr<stripe::intake_planner> intake_;  // the same: the inbox posts through it
  std::unique_ptr<stripe::inbox> inbox_;
  std::unique_ptr<api_client> api_;
  std::unique_ptr<stripe::stripe_api_jobs> api_jobs_;
  std::unique_ptr<stripe::stripe_webhooks> webhooks_;
  std::unique_ptr<stripe::inbox_gauges> gauges_;
  std::unique_ptr<stripe::settlement_gauges> settlement_gauges_;
};

}  // namespace

std::unique_ptr<service::provider> make_provider() { return std::make_unique<stripe_provider>(); }

}  // namespace bankworker::stripe
