// Operator commands for the job queue: `jobs list`, `jobs show ID`, `jobs retry|cancel ID` and
// the bulk `jobs retry|cancel --state S --kind K --tenant T [--limit N] [--dry-run]`.
#include <charconv>
#include <string>

#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "crypto/redact.hpp"
#include "queue/queue.hpp"
#include "worker/cli.hpp"
#include "service/command.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_queue_pool;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

constexpr std::size_t list_limit_default = 100;

std::int64_t parse_job_id(std::string_view text) {
  std::int64_t id = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (error != std::errc{} || end != text.data() + text.size() || id <= 0) {
    throw usage_error{"job id must be a positive integer, not '" + std::string(text) + "'"};
  }
  return id;
}

void append_optional(std::string& out, const std::optional<std::string>& value) {
  if (value) {
    core::append_json_string(*value, out);
  } else {
    out += "null";
  }
}

std::string job_json(const queue::job_summary& job) {
  std::string text = "{\"job_id\":" + std::to_string(job.id) + ",\"tenant_id\":";
  core::append_json_string(job.tenant.to_string(), text);
  text += ",\"kind\":";
  core::append_json_string(job.kind, text);
  text += ",\"state\":";
  core::append_json_string(queue::to_string(job.state), text);
  text += ",\"priority\":" + std::to_string(job.priority) + ",\"attempt\":" + std::to_string(job.attempt) +
          ",\"attempts_max\":" + std::to_string(job.attempts_max) + ",\"run_at\":";
  core::append_json_string(job.run_at, text);
  text += ",\"created_at\":";
  core::append_json_string(job.created_at, text);
  text += ",\"finished_at\":";
  append_optional(text, job.finished_at);
  text += ",\"failure\":";
  append_optional(text, job.failure);
  text += ",\"last_error\":";
  append_optional(text, job.last_error);
  text += "}";
  return text;
}

struct job_filter {
  std::optional<queue::job_state> state;
  std::optional<std::string> kind;
  std::optional<core::uuid> tenant;
  std::optional<std::size_t> limit;
};

// --state, --kind, --tenant and --limit, as `jobs list` and the bulk retry and cancel take them.
job_filter read_filter(const parsed_args& parsed) {
  job_filter filter;
  if (const auto state = parsed.option("--state")) {
    filter.state = queue::parse_job_state_name(*state);
    if (!filter.state) {
      throw usage_error{"--state must be available, running, retryable, succeeded, failed or cancelled "
                        "(or the metrics' dead, retried)"};
    }
  }
  if (const auto kind = parsed.option("--kind")) filter.kind = std::string(*kind);
  if (const auto tenant = parsed.option("--tenant")) {
    filter.tenant = core::uuid::parse(*tenant);
    if (!filter.tenant) throw usage_error{"--tenant must be a uuid"};
  }
  if (const auto limit = parsed.option("--limit")) {
    std::size_t value = 0;
    const auto [end, error] = std::from_chars(limit->data(), limit->data() + limit->size(), value);
    if (error != std::errc{} || end != limit->data() + limit->size() || value == 0 || value > limits::job_batch_max) {
      throw usage_error{"--limit must be 1.." + std::to_string(limits::job_batch_max) + " (job_batch_max)"};
    }
    filter.limit = value;
  }
  return filter;
}

int list_jobs(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {"--state", "--kind", "--tenant", "--limit"});
  const job_filter chosen = read_filter(parsed);
  const queue::list_filter filter{.state = chosen.state, .kind = chosen.kind, .tenant = chosen.tenant,
                                  .limit = chosen.limit.value_or(list_limit_default)};
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_queue_pool(config);
  queue::job_queue jobs(*connections, {});
  std::vector<queue::job_summary> found;
  try {
    found = jobs.list(filter);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("jobs list", error);
  }
  if (parsed.json) {
    std::string text = "{\"jobs\":[";
    for (std::size_t i = 0; i < found.size(); ++i) {
      if (i > 0) text.push_back(',');
      text += job_json(found[i]);
    }
    out << text << "]}\n";
    return exit_ok;
  }
  for (const queue::job_summary& job : found) {
    out << job.id << ' ' << job.tenant.to_string() << ' ' << job.kind << ' ' << queue::to_string(job.state)
        << " attempt " << job.attempt << '/' << job.attempts_max << " run_at " << job.run_at;
    if (job.failure) out << " failure " << *job.failure;
    if (job.last_error) out << " error: " << one_line(*job.last_error);
    out << '\n';
  }
  return exit_ok;
}

// `jobs retry ID` and `jobs cancel ID`: one job, by id, across tenants (an operator command).
int change_job(const parsed_args& parsed, const env_lookup& env, std::ostream& out, bool retry) {
  expect_only(parsed, 3, {});
  const std::string_view verb = retry ? "retry" : "cancel";
  if (parsed.words.size() < 3) throw usage_error{"expected 'jobs " + std::string(verb) + " ID'"};
  const std::int64_t id = parse_job_id(parsed.words[2]);
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_queue_pool(config);
  queue::job_queue jobs(*connections, {});
  std::optional<queue::job_change> change;
  try {
    change = retry ? jobs.retry(id) : jobs.cancel(id);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("jobs " + std::string(verb), error);
  }
  if (!change) throw command_error{"no job " + std::to_string(id)};
  const queue::job_state state = change->state;
  if (!change->changed) {
    throw command_error{"job " + std::to_string(id) + " is " + std::string(queue::to_string(state)) + "; only " +
                        (retry ? "failed, cancelled or retryable" : "unfinished") + " jobs can be " +
                        (retry ? "retried" : "cancelled")};
  }
  if (parsed.json) {
    std::string text = "{\"job_id\":" + std::to_string(id) + ",\"state\":";
    core::append_json_string(queue::to_string(state), text);
    out << text << "}\n";
  } else {
    out << "job " << id << ' ' << queue::to_string(state) << '\n';
  }
  return exit_ok;
}

constexpr std::size_t bulk_limit_default = 1000;

// `jobs retry|cancel --state S --kind K --tenant T [--limit N] [--dry-run]`: every matching job at
// once, in one transaction. At least one filter: a bare `jobs cancel` must not cancel the world.
int change_jobs(const parsed_args& parsed, const env_lookup& env, std::ostream& out, bool retry) {
  expect_only(parsed, 2, {"--state", "--kind", "--tenant", "--limit", "--dry-run"});
  const std::string verb = retry ? "retry" : "cancel";
  const job_filter chosen = read_filter(parsed);
  if (!chosen.state && !chosen.kind && !chosen.tenant) {
    throw usage_error{"expected 'jobs " + verb + " ID' or 'jobs " + verb + " --state S|--kind K|--tenant T'"};
  }
  const queue::change_filter filter{.state = chosen.state, .kind = chosen.kind, .tenant = chosen.tenant,
                                    .limit = chosen.limit.value_or(bulk_limit_default),
                                    .dry_run = parsed.flag("--dry-run")};
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_queue_pool(config);
  queue::job_queue jobs(*connections, {});
  std::vector<queue::matched_job> matched;
  try {
    matched = jobs.change_many(retry, filter);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("jobs " + verb, error);
  }
  std::size_t changed = 0;
  std::string text = "{\"dry_run\":" + std::string(filter.dry_run ? "true" : "false") + ",\"jobs\":[";
  for (const queue::matched_job& job : matched) {
    if (job.changed) ++changed;
    if (parsed.json) {
      if (text.back() != '[') text.push_back(',');
      text += "{\"job_id\":" + std::to_string(job.id) + ",\"tenant_id\":";
      core::append_json_string(job.tenant.to_string(), text);
      text += ",\"kind\":";
      core::append_json_string(job.kind, text);
      text += ",\"state\":";
      core::append_json_string(queue::to_string(job.state), text);
      text += ",\"changed\":" + std::string(job.changed ? "true" : "false") + "}";
      continue;
    }
    const char* outcome = filter.dry_run ? "would " : (job.changed ? "" : "skipped (a job with its unique key waits): ");
    out << job.id << ' ' << job.tenant.to_string() << ' ' << job.kind << ' ' << queue::to_string(job.state) << ' '
        << outcome << (retry ? "retry" : "cancel") << '\n';
  }
  if (parsed.json) {
    out << text << "],\"changed\":" << changed << "}\n";
  } else {
    out << matched.size() << " matched, " << changed << (retry ? " retried" : " cancelled")
        << (filter.dry_run ? " (dry run)" : "") << '\n';
  }
  return exit_ok;
}

// The attempts that did not succeed, newest first: a JSON array, or one line each after a header.
void append_attempts_json(const std::vector<queue::job_attempt>& attempts, std::string& text) {
  text += ",\"attempts\":[";
  for (const queue::job_attempt& attempt : attempts) {
    if (text.back() != '[') text.push_back(',');
    text += "{\"attempt\":" + std::to_string(attempt.attempt) + ",\"outcome\":";
    core::append_json_string(attempt.outcome, text);
    text += ",\"error\":";
    append_optional(text, attempt.error);
    text += ",\"worker\":";
    append_optional(text, attempt.worker);
    text += ",\"started_at\":";
    append_optional(text, attempt.started_at);
    text += ",\"finished_at\":";
    core::append_json_string(attempt.finished_at, text);
    text += "}";
  }
  text += "]";
}

void print_attempts(const std::vector<queue::job_attempt>& attempts, std::ostream& out) {
  out << "failed_attempts " << attempts.size() << (attempts.size() == queue::job_attempts_shown_max ? " (newest)" : "")
      << '\n';
  for (const queue::job_attempt& attempt : attempts) {
    out << "  attempt " << attempt.attempt << ' ' << attempt.outcome << " at " << attempt.finished_at << " worker "
        << attempt.worker.value_or("-") << ": " << (attempt.error ? one_line(*attempt.error) : "-") << '\n';
  }
}

void print_job_details(const queue::job_details& details, bool json, std::ostream& out) {
  // The payload is the one field that may carry a secret (a public token, a key): masked always.
  const std::string payload = crypto::redact(details.payload);
  const queue::job_summary& job = details.summary;
  if (json) {
    std::string text = job_json(job);
    text.pop_back();
    text += ",\"started_at\":";
    append_optional(text, details.started_at);
    text += ",\"in_doubt\":" + std::string(details.in_doubt ? "true" : "false") + ",\"connection_id\":";
    append_optional(text, details.connection);
    text += ",\"unique_key\":";
    append_optional(text, details.unique_key);
    text += ",\"payload\":";
    core::append_json_string(payload, text);
    append_attempts_json(details.attempts, text);
    out << text << "}\n";
    return;
  }
  out << "job " << job.id << "\ntenant " << job.tenant.to_string() << "\nkind " << job.kind << "\nstate "
      << queue::to_string(job.state) << "\npriority " << job.priority << "\nattempt " << job.attempt << '/'
      << job.attempts_max << "\nin_doubt " << (details.in_doubt ? "yes" : "no") << "\ncreated_at " << job.created_at
      << "\nrun_at " << job.run_at << "\nstarted_at " << details.started_at.value_or("-") << "\nfinished_at "
      << job.finished_at.value_or("-") << "\nconnection " << details.connection.value_or("-") << "\nunique_key "
      << details.unique_key.value_or("-") << "\nfailure " << job.failure.value_or("-") << "\nlast_error "
      << (job.last_error ? one_line(*job.last_error) : "-") << "\npayload " << payload << '\n';
  print_attempts(details.attempts, out);
}

int show_job(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {});
  if (parsed.words.size() < 3) throw usage_error{"expected 'jobs show ID'"};
  const std::int64_t id = parse_job_id(parsed.words[2]);
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_queue_pool(config);
  queue::job_queue jobs(*connections, {});
  std::optional<queue::job_details> details;
  try {
    details = jobs.details(id);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("jobs show", error);
  }
  if (!details) throw command_error{"no job " + std::to_string(id)};
  print_job_details(*details, parsed.json, out);
  return exit_ok;
}

}  // namespace

int command_jobs(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view sub = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view{};
  const bool by_id = parsed.words.size() >= 3;
  if (sub == "list") return list_jobs(parsed, env, out);
  if (sub == "show") return show_job(parsed, env, out);
  if (sub == "retry") return by_id ? change_job(parsed, env, out, true) : change_jobs(parsed, env, out, true);
  if (sub == "cancel") return by_id ? change_job(parsed, env, out, false) : change_jobs(parsed, env, out, false);
  throw usage_error{"expected 'jobs list|show ID|retry|cancel' (see bankworker jobs --help)"};
}

}  // namespace bankworker::worker
