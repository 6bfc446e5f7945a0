#include "ledger/ledger.hpp"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "core/assert.hpp"
#include "core/json_text.hpp"
#include "crypto/random.hpp"
#include "db/connection_problem.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"

namespace bankworker::ledger {

namespace {

constexpr db::statement insert_chart_sql{"ledger_insert_chart",
    "INSERT INTO bankworker.ledger_accounts (tenant_id, code, name, kind)"
    " SELECT nullif(current_setting('bankworker.tenant_id', true), '')::uuid, code, name, kind"
    " FROM unnest($1::text[], $2::text[], $3::text[]) AS chart(code, name, kind)"
    " ON CONFLICT (tenant_id, code) DO NOTHING"};
// Entries and their lines, and the check of the keys posted before (migration 0056).
constexpr db::statement post_entries_sql{"ledger_post_entries",
    "SELECT bankworker.post_journal_entries($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],"
    " $7::uuid[], $8::smallint[], $9::text[], $10::bigint[], $11::text[])"};
constexpr const char* balances_sql =
    "SELECT account_code, currency, sum(amount_minor)::bigint FROM bankworker.journal_lines"
    " GROUP BY account_code, currency ORDER BY account_code, currency";
constexpr const char* trial_balance_sql =
    "SELECT currency, sum(amount_minor)::bigint FROM bankworker.journal_lines GROUP BY currency ORDER BY currency";

bool is_account_known(std::string_view code) {
  const auto& chart = standard_chart();
  return std::any_of(chart.begin(), chart.end(), [&](const account& a) { return a.code == code; });
}

bool is_currency_code(std::string_view code) {
  if (code.size() < 3 || code.size() > 8) return false;
  return std::all_of(code.begin(), code.end(), [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); });
}

std::optional<std::string> check_metadata(const entry& e) {
  if (e.metadata.size() > metadata_pairs_max) return "more than metadata_pairs_max metadata pairs";
  for (std::size_t i = 0; i < e.metadata.size(); ++i) {
    const auto& [key, value] = e.metadata[i];
    if (key.empty() || key.size() > metadata_key_bytes_max) {
      return "metadata key must be 1.." + std::to_string(metadata_key_bytes_max) + " bytes";
    }
    if (value.size() > metadata_value_bytes_max) return "metadata value of " + key + " longer than metadata_value_bytes_max";
    for (std::size_t j = 0; j < i; ++j) {
      if (e.metadata[j].first == key) return "metadata key " + key + " given twice";
    }
  }
  return std::nullopt;
}

// The JSON object text of an entry's metadata, empty for none (stored as NULL).
std::string metadata_json(const entry& e) {
  if (e.metadata.empty()) return {};
  std::string out = "{";
  for (const auto& [key, value] : e.metadata) {
    if (out.size() > 1) out += ',';
    core::append_json_string(key, out);
    out += ':';
    core::append_json_string(value, out);
  }
  out += '}';
  return out;
}

}  // namespace

const std::vector<account>& standard_chart() {
  static const std::vector<account> chart = {
      {"stripe.clearing", "Stripe balance (clearing)", "asset"},
      {"bank", "Bank account", "asset"},
      {"receivables", "Accounts receivable", "asset"},
      {"revenue", "Revenue", "revenue"},
      {"refunds", "Refunds (contra-revenue)", "revenue"},
      {"application_fees", "Connect application fees earned", "revenue"},
      {"stripe.fees", "Stripe fees", "expense"},
      {"disputes", "Disputed amounts withdrawn", "expense"},
      {"dispute.fees", "Dispute fees", "expense"},
      {"fx", "Currency conversion", "equity"},
  };
  return chart;
}

std::optional<std::string> check_entry(const entry& e) {
  if (e.idempotency_key.empty() || e.idempotency_key.size() > idempotency_key_bytes_max) {
    return "idempotency key must be 1.." + std::to_string(idempotency_key_bytes_max) + " bytes";
  }
  if (e.description.size() > description_bytes_max) return "description longer than description_bytes_max";
  if (auto why = check_metadata(e)) return why;
  if (e.lines.size() < 2) return "an entry needs at least two lines";
  if (e.lines.size() > entry_lines_max) return "more than entry_lines_max lines";
  std::map<std::string, std::int64_t, std::less<>> sums;
  for (const line& l : e.lines) {
    if (!is_account_known(l.account)) return "unknown account '" + l.account + "'";
    if (!is_currency_code(l.currency)) return "malformed currency '" + l.currency.substr(0, 16) + "'";
    if (l.amount_minor == 0) return "a line of zero";
    std::int64_t& sum = sums[l.currency];
    if (__builtin_add_overflow(sum, l.amount_minor, &sum)) return "line amounts overflow 64 bits";
  }
  for (const auto& [currency, sum] : sums) {
    if (sum != 0) return "lines do not balance in " + currency + " (off by " + std::to_string(sum) + ")";
  }
  return std::nullopt;
}

void ensure_chart(pqxx::work& tx) {
  db::array_text codes, names, kinds;
  for (const account& a : standard_chart()) {
    codes.add(a.code);
    names.add(a.name);
    kinds.add(a.kind);
  }
  db::exec_statement(tx, insert_chart_sql, codes.finish(), names.finish(), kinds.finish());
}

post_outcome post_entry(pqxx::work& tx, const entry& e) {
  return post_entries(tx, {&e}) == 1 ? post_outcome::posted : post_outcome::already_posted;
}

namespace {

// One entry per key, each checked; a key given twice must carry the same lines both times. In key
// order, so two transactions posting overlapping keys (two events about one charge, in two
// batches) wait for each other's keys in the same order instead of deadlocking.
std::vector<const entry*> unique_entries(const std::vector<const entry*>& entries,
                                         std::unordered_map<std::string_view, const entry*>& by_key) {
  std::vector<const entry*> unique;
  unique.reserve(entries.size());
  for (const entry* e : entries) {
    if (auto why = check_entry(*e)) throw entry_invalid("entry " + e->idempotency_key.substr(0, 64) + ": " + *why);
    const auto [at, added] = by_key.emplace(e->idempotency_key, e);
    if (added) {
      unique.push_back(e);
    } else if (at->second->lines != e->lines) {
      throw entry_conflict("entry " + e->idempotency_key + " was given twice with different lines");
    }
  }
  std::sort(unique.begin(), unique.end(),
            [](const entry* a, const entry* b) { return a->idempotency_key < b->idempotency_key; });
  return unique;
}

}  // namespace

void entry_arrays::add(const entry& e, const core::uuid& id) {
  const std::string id_text = id.to_string();
  ++entries;
  ids.add(id_text);
  keys.add(e.idempotency_key);
  descriptions.add(e.description);
  occurred.add(std::to_string(e.occurred_at_s));
  sources.add(e.source);
  metadata.add(metadata_json(e));
  for (std::size_t n = 0; n < e.lines.size(); ++n) {
    const line& l = e.lines[n];
    line_entries.add(id_text);
    line_numbers.add(std::to_string(n));
    accounts.add(l.account);
    amounts.add(std::to_string(l.amount_minor));
    currencies.add(l.currency);
  }
}

std::size_t post_entries(pqxx::work& tx, const std::vector<const entry*>& entries) {
  BW_ASSERT(entries.size() <= entries_batch_max);
  std::unordered_map<std::string_view, const entry*> by_key;
  const std::vector<const entry*> unique = unique_entries(entries, by_key);
  if (unique.empty()) return 0;

  entry_arrays arrays;
  const std::vector<core::uuid> new_ids = crypto::time_ordered_uuids(unique.size());
  for (std::size_t i = 0; i < unique.size(); ++i) arrays.add(*unique[i], new_ids[i]);
  try {
    const pqxx::row inserted = db::exec_statement1(
        tx, post_entries_sql, arrays.ids.finish(), arrays.keys.finish(), arrays.descriptions.finish(),
        arrays.occurred.finish(), arrays.sources.finish(), arrays.metadata.finish(), arrays.line_entries.finish(),
        arrays.line_numbers.finish(), arrays.accounts.finish(), arrays.amounts.finish(), arrays.currencies.finish());
    return inserted[0].as<std::size_t>();
  } catch (const pqxx::sql_error& error) {
    if (error.sqlstate() != entry_conflict_sqlstate) throw;
    throw entry_conflict(db::server_message(error.what()));
  }
}

std::vector<balance> balances(pqxx::work& tx) {
  std::vector<balance> result;
  for (const auto& row : tx.exec(balances_sql)) {
    result.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::int64_t>()});
  }
  return result;
}

std::vector<balance> trial_balance(pqxx::work& tx) {
  std::vector<balance> result;
  for (const auto& row : tx.exec(trial_balance_sql)) {
    result.push_back({"", row[0].as<std::string>(), row[1].as<std::int64_t>()});
  }
  return result;
}

}  // namespace bankworker::ledger
