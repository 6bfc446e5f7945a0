// `bankworker stripe events list|retry`: what operators see of the inbox as the posting queue
// (connectors/stripe/poster.hpp) and the one-by-one retry of a dead-lettered posting.
#include <charconv>

#include "connectors/stripe/cli.hpp"
#include "connectors/stripe/posting_queue.hpp"
#include "connectors/stripe/store.hpp"
#include "core/json_text.hpp"
#include "db/audit.hpp"
#include "db/tenant_scope.hpp"
#include "service/command.hpp"

namespace bankworker::stripe {

using service::command_error;
using service::exit_ok;
using service::expect_only;
using service::load_or_throw;
using service::one_line;
using service::parsed_args;
using service::tenant_option;
using service::throw_database_failure;
using service::usage_error;

namespace {

constexpr std::uint32_t events_list_default = 100;
constexpr std::uint32_t events_list_max = 1'000;

// Stripe event ids as the inbox holds them: evt_ and letters, digits or underscores (1-256 bytes).
bool looks_like_event_id(std::string_view text) {
  if (!text.starts_with("evt_") || text.size() > 256) return false;
  for (const char c : text) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

void append_event_json(const event_summary& event, std::string& text) {
  text += "{\"event_id\":";
  core::append_json_string(event.event_id, text);
  text += ",\"type\":";
  core::append_json_string(event.type, text);
  text += ",\"state\":";
  core::append_json_string(event.state, text);
  text += ",\"attempts\":" + std::to_string(event.attempts) + ",\"received_at\":";
  core::append_json_string(event.received_at, text);
  text += ",\"available_at\":";
  if (event.available_at) core::append_json_string(*event.available_at, text);
  else text += "null";
  text += ",\"last_error\":";
  if (event.last_error) core::append_json_string(*event.last_error, text);
  else text += "null";
  text += ",\"settlement_awaited_since\":";
  if (event.settlement_awaited_since) core::append_json_string(*event.settlement_awaited_since, text);
  else text += "null";
  text += ",\"settlement_awaited\":[";
  for (const std::string& leg : event.settlement_awaited) {
    if (text.back() != '[') text.push_back(',');
    core::append_json_string(leg, text);
  }
  text += "]}";
}

// `stripe events list --tenant T [--failed | --unposted | --awaiting-settlement] [--limit N]`:
// newest first, never a body.
int list_stripe_events(const parsed_args& parsed, const service::env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {"--tenant", "--failed", "--unposted", "--awaiting-settlement", "--limit"});
  const core::uuid tenant = tenant_option(parsed);
  if (int(parsed.flag("--failed")) + int(parsed.flag("--unposted")) + int(parsed.flag("--awaiting-settlement")) > 1) {
    throw usage_error{"--failed, --unposted and --awaiting-settlement exclude each other"};
  }
  const event_filter filter = parsed.flag("--failed")                ? event_filter::failed
                              : parsed.flag("--unposted")            ? event_filter::unposted
                              : parsed.flag("--awaiting-settlement") ? event_filter::awaiting_settlement
                                                                     : event_filter::all;
  std::uint32_t limit = events_list_default;
  if (const auto text = parsed.option("--limit")) {
    const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), limit);
    if (error != std::errc{} || end != text->data() + text->size() || limit == 0 || limit > events_list_max) {
      throw usage_error{"--limit must be 1.." + std::to_string(events_list_max)};
    }
  }
  service::settings config = load_or_throw(env, {.database = true});
  const auto connections = service::open_worker_pool(config);
  std::vector<event_summary> events;
  try {
    events = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      if (!stripe::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
      return list_events(tx, filter, limit);
    });
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe events list", error);
  }
  if (parsed.json) {
    std::string text = "{\"tenant_id\":\"" + tenant.to_string() + "\",\"events\":[";
    for (const event_summary& event : events) {
      if (text.back() != '[') text.push_back(',');
      append_event_json(event, text);
    }
    out << text << "]}\n";
    return exit_ok;
  }
  for (const event_summary& event : events) {
    out << event.event_id << ' ' << event.type << ' ' << event.state << " attempts=" << event.attempts
        << " received_at=" << event.received_at << " available_at=" << event.available_at.value_or("-")
        << " last_error=" << (event.last_error ? one_line(*event.last_error) : "-");
    if (event.settlement_awaited_since) {
      out << " awaiting_settlement_since=" << *event.settlement_awaited_since << " awaiting=";
      for (std::size_t i = 0; i < event.settlement_awaited.size(); ++i) {
        out << (i == 0 ? "" : ",") << event.settlement_awaited[i];
      }
    }
    out << '\n';
  }
  return exit_ok;
}

// `stripe events retry --tenant T --id evt_…`: a dead-lettered event back to the posters with its
// attempts cleared, audited.
int retry_stripe_event(const parsed_args& parsed, const service::env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {"--tenant", "--id"});
  const core::uuid tenant = tenant_option(parsed);
  const auto id = parsed.option("--id");
  if (!id || !looks_like_event_id(*id)) throw usage_error{"stripe events retry needs --id evt_… (a Stripe event id)"};
  const std::string event_id(*id);
  service::settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = service::open_worker_pool(config);
  const auto keys = service::open_key_store(config, *connections);
  try {
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      if (!stripe::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
      if (!retry_failed_event(tx, event_id)) {
        throw command_error{"tenant " + tenant.to_string() + " has no failed Stripe event " + event_id};
      }
      db::append_audit(tx, *keys, {.tenant = tenant, .actor = "cli", .action = "stripe.event_retried",
                                   .subject = event_id, .details = "{}"});
    });
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe events retry", error);
  }
  out << (parsed.json ? "{\"event_id\":\"" + event_id + "\",\"state\":\"received\"}" : "retrying " + event_id) << '\n';
  return exit_ok;
}

}  // namespace

int command_stripe_events(const parsed_args& parsed, const service::env_lookup& env, std::ostream& out) {
  if (parsed.words.size() >= 3 && parsed.words[2] == "list") return list_stripe_events(parsed, env, out);
  if (parsed.words.size() >= 3 && parsed.words[2] == "retry") return retry_stripe_event(parsed, env, out);
  throw usage_error{"usage: bankworker stripe events list|retry ..."};
}

}  // namespace bankworker::stripe
