#pragma once
// The tenant's double-entry ledger (DESIGN.md §4): entries of balanced lines in integer minor
// units, posted idempotently under a key naming the money object and its leg (ch_…:gross).
// The database enforces balance and immutability itself (migration 0002); this module decides
// what a well-formed entry is, posts it once, and reads balances back. It knows nothing of Stripe.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/sql_array.hpp"

namespace bankworker::ledger {

inline constexpr std::size_t entry_lines_max = 64;
inline constexpr std::size_t idempotency_key_bytes_max = 256;
inline constexpr std::size_t description_bytes_max = 1'024;
inline constexpr std::size_t metadata_pairs_max = 8;
inline constexpr std::size_t metadata_key_bytes_max = 64;
inline constexpr std::size_t metadata_value_bytes_max = 256;

struct line {
  std::string account;  // a code of the chart (stripe.clearing, revenue, …)
  std::int64_t amount_minor = 0;  // debit positive, credit negative
  std::string currency;

  friend bool operator==(const line&, const line&) = default;
};

struct entry {
  std::string idempotency_key;  // money object id + leg: "ch_123:gross"
  std::string description;
  std::int64_t occurred_at_s = 0;  // unix seconds: when the money moved, per the provider
  std::string source;              // what it came from, e.g. the event id
  std::vector<line> lines;
  // Facts about the money object that are not lines but that readers of the ledger need, stored
  // as a JSON object of strings (journal_entries.metadata, migration 0040). A payout's entry
  // carries `arrival_date` (unix seconds) and `statement_descriptor`, which reconciliation
  // (reconcile.hpp) matches the bank deposit by. Not part of an entry's identity: an entry posted
  // again with other metadata is the same entry, like its description.
  std::vector<std::pair<std::string, std::string>> metadata{};  // {}: initialisers may leave it out
};

struct account {
  std::string code;
  std::string name;
  std::string kind;  // asset, liability, equity, revenue, expense
};

// The chart every tenant gets.
const std::vector<account>& standard_chart();

// Why `e` is not a well-formed entry, or nothing: at least two lines and at most entry_lines_max,
// no zero amounts, sums to zero in every currency, accounts in the standard chart, a key,
// description and metadata (distinct non-empty keys) within bounds. Money arithmetic is checked for overflow.
std::optional<std::string> check_entry(const entry& e);

// The same key was posted before with different lines: two sources disagree about one money
// movement. Permanent for the job; a person must look (the first posting stands).
class entry_conflict : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A malformed entry reached post_entry: the posting rules have a bug. Permanent for the job.
class entry_invalid : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class post_outcome {
  posted,          // the entry and its lines were inserted in this transaction
  already_posted,  // an entry with this key and the same lines exists: nothing changed
};

// Posts many entries in the caller's tenant-scoped transaction with one statement
// (bankworker.post_journal_entries), whatever their number (at most entries_batch_max): the same meaning as post_entry for each, so an entry
// posted before with the same lines is left alone and one with different lines throws
// entry_conflict, as does a key given twice here with different lines. On a throw the caller must
// roll back: entries before the offending one may already be in the transaction. Entries are
// inserted in key order (a lock order shared by every caller). Returns how many entries were
// newly inserted.
inline constexpr std::size_t entries_batch_max = 4'096;
std::size_t post_entries(pqxx::work& tx, const std::vector<const entry*>& entries);

// Entries in the shape bankworker.post_journal_entries takes (migration 0056): eleven parallel
// arrays, the entries' six and their lines' five, each entry under an id its caller made
// (crypto::time_ordered_uuids). post_entries builds them; so does the Stripe inbox, which passes
// them through its own function (migration 0057) to post events as it stores them. The entries
// must have passed check_entry.
struct entry_arrays {
  void add(const entry& e, const core::uuid& id);
  std::size_t entries = 0;
  db::array_text ids, keys, descriptions, occurred, sources, metadata;
  db::array_text line_entries, line_numbers, accounts, amounts, currencies;
};

// The SQLSTATE bankworker.post_journal_entries raises for a key posted before with other lines.
inline constexpr const char* entry_conflict_sqlstate = "BWE01";

// Creates the standard chart for the transaction's tenant (idempotent).
void ensure_chart(pqxx::work& tx);

// Posts `e` in the caller's tenant-scoped transaction (the entry lands or not with it).
// Throws entry_invalid or entry_conflict; database errors propagate.
post_outcome post_entry(pqxx::work& tx, const entry& e);

struct balance {
  std::string account;
  std::string currency;
  std::int64_t amount_minor = 0;  // debits minus credits
};

// Balances per account and currency, accounts in code order.
std::vector<balance> balances(pqxx::work& tx);

// Sum of all lines per currency; zero for every currency in a healthy ledger.
std::vector<balance> trial_balance(pqxx::work& tx);

}  // namespace bankworker::ledger
