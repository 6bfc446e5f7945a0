#include "connectors/plaid/sync_buffer.hpp"

#include <utility>

namespace bankworker::plaid {

bool sync_buffer::add_page(sync_page page) {
  const std::size_t incoming = page.added.size() + page.modified.size() + page.removed.size();
  if (incoming > rows_max_ - rows()) return false;
  changes_.added += page.added.size();
  changes_.modified += page.modified.size();
  changes_.removed += page.removed.size();
  for (transaction& row : page.added) upsert(std::move(row));
  for (transaction& row : page.modified) upsert(std::move(row));
  for (removed_transaction& gone : page.removed) remove(std::move(gone.transaction_id));
  changes_.accounts = std::move(page.accounts);
  return true;
}

void sync_buffer::upsert(transaction&& row) {
  removed_.erase(row.transaction_id);
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
  removed_[std::move(id)] = true;
}

void sync_buffer::clear() {
  changes_ = {};
  upsert_live_.clear();
  upsert_at_.clear();
  removed_.clear();
}

sync_changes sync_buffer::take() {
  sync_changes out;
  out.added = changes_.added;
  out.modified = changes_.modified;
  out.removed = changes_.removed;
  out.accounts = std::move(changes_.accounts);
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

}  // namespace bankworker::plaid
