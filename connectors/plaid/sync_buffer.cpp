#include "connectors/plaid/sync_buffer.hpp"

#include <unordered_set>
#include <utility>

namespace bankworker::plaid {

bool sync_buffer::add_page(sync_page page) {
  const std::size_t incoming =
      page.added.size() + page.modified.size() + page.removed.size() + page.rejected.size();
  if (incoming > rows_max_ - rows()) return false;
  changes_.added += page.added.size();
  changes_.modified += page.modified.size();
  changes_.removed += page.removed.size();
  // A page's three lists never name one id twice (Plaid's contract), so set-aside rows can be
  // folded after the upserts without reordering anything.
  for (transaction& row : page.added) upsert(std::move(row));
  for (transaction& row : page.modified) upsert(std::move(row));
  for (removed_transaction& gone : page.removed) remove(std::move(gone.transaction_id));
  set_aside_accounts_.clear();
  for (rejected_row& row : page.rejected) {
    if (row.kind == rejected_row::row_kind::account) {
      set_aside_accounts_.push_back(std::move(row));
      continue;
    }
    ++changes_.set_aside;
    set_aside(std::move(row));
  }
  changes_.accounts = std::move(page.accounts);
  return true;
}

void sync_buffer::set_aside(rejected_row&& row) {
  const auto found = upsert_at_.find(row.plaid_id);
  if (found != upsert_at_.end()) upsert_live_[found->second] = false;
  removed_.erase(row.plaid_id);
  std::string id = row.plaid_id;
  set_aside_.insert_or_assign(std::move(id), std::move(row));
}

void sync_buffer::upsert(transaction&& row) {
  removed_.erase(row.transaction_id);
  set_aside_.erase(row.transaction_id);
  const auto found = upsert_at_.find(row.transaction_id);
  if (found != upsert_at_.end()) {
    changes_.upserts[found->second] = std::move(row);
    upsert_live_[found->second] = true;
    return;
  }
  upsert_at_.emplace(row.transaction_id, changes_.upserts.size());
  changes_.upserts.push_back(std::move(row));
  upsert_live_.push_back(true);
}

void sync_buffer::remove(std::string&& id) {
  const auto found = upsert_at_.find(id);
  if (found != upsert_at_.end()) upsert_live_[found->second] = false;
  set_aside_.erase(id);
  removed_[std::move(id)] = true;
}

void sync_buffer::clear() {
  changes_ = {};
  upsert_live_.clear();
  upsert_at_.clear();
  removed_.clear();
  set_aside_.clear();
  set_aside_accounts_.clear();
}

sync_changes sync_buffer::take() {
  sync_changes out;
  out.added = changes_.added;
  out.modified = changes_.modified;
  out.removed = changes_.removed;
  out.set_aside = changes_.set_aside;
  out.accounts = std::move(changes_.accounts);
  out.rejected.reserve(set_aside_.size() + set_aside_accounts_.size());
  for (auto& [id, row] : set_aside_) out.rejected.push_back(std::move(row));
  for (rejected_row& row : set_aside_accounts_) out.rejected.push_back(std::move(row));
  out.upserts.reserve(changes_.upserts.size());
  for (std::size_t i = 0; i < changes_.upserts.size(); ++i) {
    if (!upsert_live_[i]) continue;
    transaction& row = changes_.upserts[i];
    if (row.pending_transaction_id && !row.pending) out.posted_pending.push_back(*row.pending_transaction_id);
    out.upserts.push_back(std::move(row));
  }
  out.removals.reserve(removed_.size());
  for (auto& [id, still_removed] : removed_) {
    if (still_removed) out.removals.push_back(id);
  }
  clear();
  return out;
}

void fold_released(sync_changes& changes, sync_page released) {
  std::unordered_set<std::string_view> walk_said;
  for (const transaction& row : changes.upserts) walk_said.insert(row.transaction_id);
  for (const std::string& id : changes.removals) walk_said.insert(id);
  std::unordered_set<std::string_view> walk_accounts;
  for (const account& row : changes.accounts) walk_accounts.insert(row.account_id);
  for (const rejected_row& row : changes.rejected) {
    (row.kind == rejected_row::row_kind::account ? walk_accounts : walk_said).insert(row.plaid_id);
  }
  std::vector<transaction> upserts;
  for (transaction& row : released.added) {
    if (walk_said.contains(row.transaction_id)) continue;
    if (row.pending_transaction_id && !row.pending) changes.posted_pending.push_back(*row.pending_transaction_id);
    upserts.push_back(std::move(row));
  }
  std::vector<account> accounts;
  for (account& row : released.accounts) {
    if (!walk_accounts.contains(row.account_id)) accounts.push_back(std::move(row));
  }
  std::vector<rejected_row> again;
  for (rejected_row& row : released.rejected) {
    const bool is_account = row.kind == rejected_row::row_kind::account;
    if (!(is_account ? walk_accounts : walk_said).contains(row.plaid_id)) again.push_back(std::move(row));
  }
  // walk_said and walk_accounts view strings inside `changes`: append only once they are done.
  for (transaction& row : upserts) changes.upserts.push_back(std::move(row));
  for (account& row : accounts) changes.accounts.push_back(std::move(row));
  for (rejected_row& row : again) changes.rejected.push_back(std::move(row));
}

}  // namespace bankworker::plaid
