#include "ledger/export.hpp"

#include <map>
#include <stdexcept>

#include "core/json_text.hpp"

namespace bankworker::ledger {

namespace {

constexpr const char* tenant_sql = "SELECT tenant_id::text, name FROM bankworker.tenants";
constexpr const char* exponents_sql = "SELECT code, exponent FROM bankworker.currencies";
constexpr const char* account_balances_sql =
    "SELECT a.code, a.name, a.kind, l.currency, coalesce(sum(l.amount_minor), 0)::bigint"
    " FROM bankworker.ledger_accounts a LEFT JOIN bankworker.journal_lines l"
    "   ON l.tenant_id = a.tenant_id AND l.account_code = a.code"
    " GROUP BY a.code, a.name, a.kind, l.currency ORDER BY a.code, l.currency";
constexpr const char* trial_sql =
    "SELECT currency, sum(amount_minor)::bigint FROM bankworker.journal_lines GROUP BY currency ORDER BY currency";
constexpr const char* entry_lines_cursor_sql =
    "DECLARE bankworker_export_lines NO SCROLL CURSOR FOR"
    " SELECT e.idempotency_key, e.description, to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    "        coalesce(e.source, ''), l.line_no, l.account_code, l.currency, l.amount_minor"
    " FROM bankworker.journal_entries e JOIN bankworker.journal_lines l"
    "   ON l.tenant_id = e.tenant_id AND l.entry_id = e.entry_id"
    " ORDER BY e.occurred_at, e.idempotency_key, l.line_no";
constexpr const char* transactions_cursor_sql =
    "DECLARE bankworker_export_transactions NO SCROLL CURSOR FOR"
    " SELECT transaction_id, account_id, date::text, name, coalesce(merchant_name, ''), currency, amount_minor,"
    "        pending, removed_at IS NOT NULL"
    " FROM bankworker.transactions ORDER BY date, transaction_id";
// Each payout's reconciliation (ledger/reconcile.hpp): its status and the bank row it matched.
constexpr const char* reconciliation_cursor_sql =
    "DECLARE bankworker_export_reconciliation NO SCROLL CURSOR FOR"
    " SELECT payout_id, expected_on::text, status, coalesce(transaction_id, ''), currency, amount_minor,"
    "        difference_minor, reason"
    " FROM bankworker.reconcile_payouts ORDER BY expected_on, payout_id";

// Exact decimal placement, in text.
std::string place_point(std::int64_t minor, int exponent) {
  const bool negative = minor < 0;
  // Magnitude without overflow for INT64_MIN.
  const unsigned long long magnitude =
      negative ? static_cast<unsigned long long>(-(minor + 1)) + 1ULL : static_cast<unsigned long long>(minor);
  std::string digits = std::to_string(magnitude);
  if (exponent > 0) {
    const auto places = static_cast<std::size_t>(exponent);
    if (digits.size() <= places) digits.insert(0, places - digits.size() + 1, '0');
    digits.insert(digits.size() - places, ".");
  }
  return negative ? "-" + digits : digits;
}

// A CSV field: quoted when it holds a separator, quote or line break.
std::string csv(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"') quoted.push_back('"');
    quoted.push_back(c);
  }
  quoted.push_back('"');
  return quoted;
}

std::string json(std::string_view text) {
  std::string out;
  core::append_json_string(text, out);
  return out;
}

class writer {
 public:
  writer(export_format format, std::ostream& out, std::map<std::string, int> exponents)
      : format_(format), out_(out), exponents_(std::move(exponents)) {}

  int exponent(const std::string& currency) const {
    const auto it = exponents_.find(currency);
    return it == exponents_.end() ? 0 : it->second;
  }
  std::string amount(std::int64_t minor, const std::string& currency) const {
    return place_point(minor, exponent(currency));
  }
  bool is_json() const { return format_ == export_format::json; }
  std::ostream& out() { return out_; }

 private:
  export_format format_;
  std::ostream& out_;
  std::map<std::string, int> exponents_;
};

// Runs FETCH on a declared cursor until it is exhausted, one bounded batch at a time.
template <class Row>
void for_each_row(pqxx::work& tx, const char* declare_sql, std::string_view cursor, Row&& row) {
  tx.exec(declare_sql);
  const std::string fetch = "FETCH " + std::to_string(export_batch_rows) + " FROM " + std::string(cursor);
  for (;;) {
    const pqxx::result batch = tx.exec(fetch);
    for (const auto& r : batch) row(r);
    if (batch.size() < export_batch_rows) break;
  }
  tx.exec("CLOSE " + std::string(cursor));
}

// Each account's balance per currency.
void write_accounts(pqxx::work& tx, writer& w, std::ostream& out) {
  bool first = true;
  for (const auto& row : tx.exec(account_balances_sql)) {
    const std::string code = row[0].as<std::string>();
    const std::string currency = row[3].is_null() ? "" : row[3].as<std::string>();
    const auto minor = row[4].as<std::int64_t>();
    if (w.is_json()) {
      out << (first ? "\n" : ",\n") << "{\"code\":" << json(code) << ",\"name\":" << json(row[1].as<std::string>())
          << ",\"kind\":" << json(row[2].as<std::string>()) << ",\"currency\":" << (currency.empty() ? "null" : json(currency))
          << ",\"balance_minor\":" << minor << ",\"balance\":" << json(w.amount(minor, currency)) << "}";
    } else {
      out << "balance,," << "," << csv(code) << "," << csv(currency) << "," << minor << "," << w.amount(minor, currency)
          << "," << csv(row[1].as<std::string>()) << "\n";
    }
    first = false;
  }

}

// The sum of every line per currency: zero when the books balance.
void write_trial_balance(pqxx::work& tx, writer& w, std::ostream& out) {
  bool first = true;
  for (const auto& row : tx.exec(trial_sql)) {
    const std::string currency = row[0].as<std::string>();
    const auto minor = row[1].as<std::int64_t>();
    if (w.is_json()) {
      out << (first ? "" : ",") << "{\"currency\":" << json(currency) << ",\"total_minor\":" << minor << "}";
    } else {
      out << "trial_balance,,,," << csv(currency) << "," << minor << "," << w.amount(minor, currency) << ",\n";
    }
    first = false;
  }

}

// Every journal entry with its lines, read through a cursor in batches.
void write_journal(pqxx::work& tx, writer& w, std::ostream& out) {
  std::string open_key;
  bool first = true;
  for_each_row(tx, entry_lines_cursor_sql, "bankworker_export_lines", [&](const pqxx::row& row) {
    const std::string key = row[0].as<std::string>();
    const std::string currency = row[6].as<std::string>();
    const auto minor = row[7].as<std::int64_t>();
    if (w.is_json()) {
      if (key != open_key) {
        if (!open_key.empty()) out << "]}";
        out << (first ? "\n" : ",\n") << "{\"key\":" << json(key) << ",\"description\":" << json(row[1].as<std::string>())
            << ",\"occurred_at\":" << json(row[2].as<std::string>()) << ",\"source\":" << json(row[3].as<std::string>())
            << ",\"lines\":[";
        open_key = key;
        first = false;
      } else {
        out << ",";
      }
      out << "{\"account\":" << json(row[5].as<std::string>()) << ",\"currency\":" << json(currency)
          << ",\"amount_minor\":" << minor << ",\"amount\":" << json(w.amount(minor, currency)) << "}";
    } else {
      out << "entry_line," << csv(key) << "," << row[2].as<std::string>() << "," << csv(row[5].as<std::string>()) << ","
          << csv(currency) << "," << minor << "," << w.amount(minor, currency) << "," << csv(row[1].as<std::string>())
          << "\n";
    }
  });
  if (w.is_json() && !open_key.empty()) out << "]}";
}

// The bank transactions synced from Plaid, read through a cursor in batches.
void write_transactions(pqxx::work& tx, writer& w, std::ostream& out) {
  bool first = true;
  for_each_row(tx, transactions_cursor_sql, "bankworker_export_transactions", [&](const pqxx::row& row) {
    const std::string currency = row[5].as<std::string>();
    const auto minor = row[6].as<std::int64_t>();
    if (w.is_json()) {
      out << (first ? "\n" : ",\n") << "{\"transaction_id\":" << json(row[0].as<std::string>())
          << ",\"account_id\":" << json(row[1].as<std::string>()) << ",\"date\":" << json(row[2].as<std::string>())
          << ",\"name\":" << json(row[3].as<std::string>()) << ",\"merchant\":" << json(row[4].as<std::string>())
          << ",\"currency\":" << json(currency) << ",\"amount_minor\":" << minor
          << ",\"amount\":" << json(w.amount(minor, currency)) << ",\"pending\":" << (row[7].as<bool>() ? "true" : "false")
          << ",\"removed\":" << (row[8].as<bool>() ? "true" : "false") << "}";
    } else {
      out << "transaction," << csv(row[0].as<std::string>()) << "," << row[2].as<std::string>() << ","
          << csv(row[1].as<std::string>()) << "," << csv(currency) << "," << minor << "," << w.amount(minor, currency)
          << "," << csv(row[3].as<std::string>()) << "\n";
    }
    first = false;
  });
}

// Every payout with its reconciliation status and matched transaction, through a cursor.
void write_reconciliation(pqxx::work& tx, writer& w, std::ostream& out) {
  bool first = true;
  for_each_row(tx, reconciliation_cursor_sql, "bankworker_export_reconciliation", [&](const pqxx::row& row) {
    const std::string currency = row[4].as<std::string>();
    const auto minor = row[5].as<std::int64_t>();
    const std::string transaction = row[3].as<std::string>();
    if (w.is_json()) {
      out << (first ? "\n" : ",\n") << "{\"payout_id\":" << json(row[0].as<std::string>())
          << ",\"expected_on\":" << json(row[1].as<std::string>()) << ",\"status\":" << json(row[2].as<std::string>())
          << ",\"transaction_id\":" << (transaction.empty() ? "null" : json(transaction))
          << ",\"currency\":" << json(currency) << ",\"amount_minor\":" << minor
          << ",\"amount\":" << json(w.amount(minor, currency))
          << ",\"difference_minor\":" << row[6].as<std::int64_t>() << ",\"reason\":" << json(row[7].as<std::string>())
          << "}";
    } else {
      out << "reconciliation," << csv(row[0].as<std::string>()) << "," << row[1].as<std::string>() << ","
          << csv(transaction) << "," << csv(currency) << "," << minor << "," << w.amount(minor, currency) << ","
          << row[2].as<std::string>() << "\n";
    }
    first = false;
  });
}

}  // namespace

std::string decimal_text(std::int64_t minor, int exponent) { return place_point(minor, exponent); }

void export_books(pqxx::work& tx, export_format format, std::ostream& out) {
  const pqxx::result tenant = tx.exec(tenant_sql);
  if (tenant.empty()) throw std::runtime_error("unknown tenant (no tenant row in this scope)");
  std::map<std::string, int> exponents;
  for (const auto& row : tx.exec(exponents_sql)) exponents.emplace(row[0].as<std::string>(), row[1].as<int>());
  writer w(format, out, std::move(exponents));

  if (w.is_json()) {
    out << "{\"tenant_id\":" << json(tenant[0][0].as<std::string>()) << ",\"name\":" << json(tenant[0][1].as<std::string>())
        << ",\n\"accounts\":[";
  } else {
    out << "section,key,date,account,currency,amount_minor,amount,description\n";
  }
  write_accounts(tx, w, out);
  if (w.is_json()) out << "],\n\"trial_balance\":[";
  write_trial_balance(tx, w, out);
  if (w.is_json()) out << "],\n\"journal_entries\":[";
  write_journal(tx, w, out);
  if (w.is_json()) out << "],\n\"transactions\":[";
  write_transactions(tx, w, out);
  if (w.is_json()) out << "],\n\"reconciliation\":[";
  write_reconciliation(tx, w, out);
  if (w.is_json()) out << "]}\n";
  out.flush();
}

}  // namespace bankworker::ledger
