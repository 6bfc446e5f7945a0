#pragma once
// The pages of one /transactions/sync walk, collapsed into the changes to apply (pure, no I/O).
//
// Plaid's rule (DESIGN.md §1.1): nothing is applied until has_more is false, and then everything
// at once with the final cursor. Within a walk the same transaction can appear more than once
// (added on page 1, modified on page 2, removed on page 3), so pages are folded in order, each
// page as added, then modified, then removed, and the last word on an id wins:
//  - an upsert keeps the transaction's latest state;
//  - a removal drops any upsert of that id from this walk and tombstones the stored row;
//  - an upsert of a posted transaction carrying pending_transaction_id P also tombstones P if it
//    is still stored as pending. That is the pending→posted link, and it holds whichever page P's
//    removal arrives on, or if it never arrives (Plaid replaced the pending one before we saw it).
//  - a transaction set aside for its money (sync_page::rejected) drops any upsert of that id from
//    this walk and is quarantined; a later upsert or removal of the id drops the quarantine instead.
//    Accounts set aside follow the accounts: the latest page's.
//
// Bounded: the walk's received entries (added + modified + removed) are capped at rows_max; past
// it add_page() refuses and the job fails with the limit named, rather than grow without end.

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include "connectors/plaid/sync_page.hpp"

namespace bankworker::plaid {

struct sync_changes {
  std::vector<transaction> upserts;        // final states, in the order first seen
  std::vector<std::string> removals;       // ids to tombstone (absent from upserts)
  std::vector<std::string> posted_pending; // pending ids replaced by a posted upsert
  std::vector<account> accounts;           // the latest page's accounts
  std::vector<rejected_row> rejected;      // rows to quarantine: transactions, then the latest page's accounts
  std::size_t added = 0;                   // entries as received, for metrics and the audit row
  std::size_t modified = 0;
  std::size_t removed = 0;
  std::size_t set_aside = 0;               // transactions received but set aside for their money
};

// Adds quarantined rows that can be applied now (their currency was declared since) to a walk's
// changes. The walk's own word on an id wins: a released row whose id the walk upserted, removed or
// set aside again is dropped, so nothing older overwrites something newer. Released rows that
// failed again (`released.rejected`) are quarantined again.
void fold_released(sync_changes& changes, sync_page released);

class sync_buffer {
 public:
  explicit sync_buffer(std::size_t rows_max) : rows_max_(rows_max) {}

  // Folds one page in. False (and nothing folded) when it would pass rows_max.
  bool add_page(sync_page page);
  // Forgets everything (a restart after TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION).
  void clear();
  std::size_t rows() const noexcept {
    return changes_.added + changes_.modified + changes_.removed + changes_.set_aside;
  }
  std::size_t rows_max() const noexcept { return rows_max_; }
  // The collapsed changes; the buffer is empty afterwards.
  sync_changes take();

 private:
  void upsert(transaction&& row);
  void remove(std::string&& id);
  void set_aside(rejected_row&& row);

  std::size_t rows_max_;
  sync_changes changes_;
  std::vector<bool> upsert_live_;                           // parallel to changes_.upserts
  std::unordered_map<std::string, std::size_t> upsert_at_;  // id → index in changes_.upserts
  std::unordered_map<std::string, bool> removed_;           // id → still removed
  std::unordered_map<std::string, rejected_row> set_aside_;  // transaction id → its quarantined state
  std::vector<rejected_row> set_aside_accounts_;             // the latest page's
};

}  // namespace bankworker::plaid
