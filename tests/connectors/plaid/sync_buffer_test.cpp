// Folding /transactions/sync pages into the changes one sync applies.
#include <catch2/catch.hpp>

#include <algorithm>

#include "connectors/plaid/sync_buffer.hpp"

using bankworker::plaid::removed_transaction;
using bankworker::plaid::sync_buffer;
using bankworker::plaid::sync_page;
using bankworker::plaid::transaction;

namespace {

transaction row(std::string id, std::int64_t amount_minor, bool pending = false,
                std::optional<std::string> pending_id = std::nullopt) {
  transaction t;
  t.transaction_id = std::move(id);
  t.account_id = "acc";
  t.amount_minor = amount_minor;
  t.currency = "USD";
  t.date = "2026-10-01";
  t.name = "x";
  t.pending = pending;
  t.pending_transaction_id = std::move(pending_id);
  return t;
}

removed_transaction gone(std::string id) { return {std::move(id), std::nullopt}; }

bool contains(const std::vector<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

TEST_CASE("a transaction added then modified on a later page is applied once, in its latest state", "[plaid][sync]") {
  sync_buffer buffer(100);
  sync_page first;
  first.added = {row("a", -100), row("b", -200)};
  sync_page second;
  second.modified = {row("a", -150)};
  REQUIRE(buffer.add_page(std::move(first)));
  REQUIRE(buffer.add_page(std::move(second)));
  const auto changes = buffer.take();
  REQUIRE(changes.upserts.size() == 2);
  CHECK(changes.upserts[0].transaction_id == "a");
  CHECK(changes.upserts[0].amount_minor == -150);
  CHECK(changes.added == 2);
  CHECK(changes.modified == 1);
  CHECK(changes.removals.empty());
}

TEST_CASE("a transaction removed after it was added in the same walk is neither stored nor kept", "[plaid][sync]") {
  sync_buffer buffer(100);
  sync_page first;
  first.added = {row("a", -100)};
  sync_page second;
  second.removed = {gone("a"), gone("old")};
  REQUIRE(buffer.add_page(std::move(first)));
  REQUIRE(buffer.add_page(std::move(second)));
  const auto changes = buffer.take();
  CHECK(changes.upserts.empty());
  CHECK(changes.removals.size() == 2);
  CHECK(contains(changes.removals, "a"));
  CHECK(contains(changes.removals, "old"));
}

TEST_CASE("pending to posted links whichever page the pending removal arrives on", "[plaid][sync]") {
  SECTION("removal first, posted on the next page") {
    sync_buffer buffer(100);
    sync_page first;
    first.removed = {gone("pending-1")};
    sync_page second;
    second.added = {row("posted-1", -500, false, "pending-1")};
    REQUIRE(buffer.add_page(std::move(first)));
    REQUIRE(buffer.add_page(std::move(second)));
    const auto changes = buffer.take();
    REQUIRE(changes.upserts.size() == 1);
    CHECK(changes.upserts[0].pending_transaction_id == std::optional<std::string>("pending-1"));
    CHECK(contains(changes.removals, "pending-1"));
    CHECK(contains(changes.posted_pending, "pending-1"));
  }
  SECTION("posted first, and the pending one never reported removed") {
    sync_buffer buffer(100);
    sync_page only;
    only.added = {row("posted-2", -700, false, "pending-2")};
    REQUIRE(buffer.add_page(std::move(only)));
    const auto changes = buffer.take();
    CHECK(changes.removals.empty());
    REQUIRE(changes.posted_pending.size() == 1);
    CHECK(changes.posted_pending[0] == "pending-2");
  }
}

TEST_CASE("a page that would pass the row limit is refused and nothing of it is folded", "[plaid][sync]") {
  sync_buffer buffer(3);
  sync_page first;
  first.added = {row("a", 1), row("b", 2)};
  REQUIRE(buffer.add_page(std::move(first)));
  sync_page second;
  second.added = {row("c", 3), row("d", 4)};
  CHECK_FALSE(buffer.add_page(std::move(second)));
  CHECK(buffer.rows() == 2);
  CHECK(buffer.take().upserts.size() == 2);
}

TEST_CASE("clearing the buffer forgets the walk (a restart after a mutation)", "[plaid][sync]") {
  sync_buffer buffer(10);
  sync_page first;
  first.added = {row("a", 1)};
  first.removed = {gone("z")};
  REQUIRE(buffer.add_page(std::move(first)));
  buffer.clear();
  sync_page again;
  again.added = {row("b", 2)};
  REQUIRE(buffer.add_page(std::move(again)));
  const auto changes = buffer.take();
  REQUIRE(changes.upserts.size() == 1);
  CHECK(changes.upserts[0].transaction_id == "b");
  CHECK(changes.removals.empty());
  CHECK(changes.added == 1);
}

namespace {

bankworker::plaid::rejected_row set_aside_row(std::string id) {
  bankworker::plaid::rejected_row r;
  r.plaid_id = std::move(id);
  r.account_id = "acc";
  r.currency = "QQQ";
  r.raw_json = "{}";
  return r;
}

}  // namespace

TEST_CASE("a transaction set aside for its money replaces this walk's earlier state and yields to a later one",
          "[plaid][sync][quarantine]") {
  sync_buffer buffer(100);
  sync_page first;
  first.added = {row("a", -100), row("b", -200)};
  sync_page second;
  second.rejected = {set_aside_row("a"), set_aside_row("b")};
  sync_page third;
  third.modified = {row("b", -250)};
  REQUIRE(buffer.add_page(std::move(first)));
  REQUIRE(buffer.add_page(std::move(second)));
  REQUIRE(buffer.add_page(std::move(third)));
  const auto changes = buffer.take();
  // a: its latest word is the set-aside copy, so it is quarantined and not upserted.
  REQUIRE(changes.upserts.size() == 1);
  CHECK(changes.upserts[0].transaction_id == "b");
  CHECK(changes.upserts[0].amount_minor == -250);
  REQUIRE(changes.rejected.size() == 1);
  CHECK(changes.rejected[0].plaid_id == "a");
  CHECK(changes.set_aside == 2);
}

TEST_CASE("set-aside rows count against the walk's bound", "[plaid][sync][quarantine]") {
  sync_buffer buffer(2);
  sync_page page;
  page.added = {row("a", -1)};
  page.rejected = {set_aside_row("b"), set_aside_row("c")};
  CHECK_FALSE(buffer.add_page(std::move(page)));
}

TEST_CASE("released quarantined rows apply unless the walk has a newer word on them", "[plaid][sync][quarantine]") {
  sync_buffer buffer(100);
  sync_page page;
  page.added = {row("new", -1)};
  page.removed = {gone("removed-now")};
  page.rejected = {set_aside_row("again")};
  REQUIRE(buffer.add_page(std::move(page)));
  auto changes = buffer.take();
  sync_page released;
  released.added = {row("waited", -7), row("new", -999), row("removed-now", -2), row("again", -3)};
  released.rejected = {set_aside_row("still-odd")};
  bankworker::plaid::fold_released(changes, std::move(released));
  std::vector<std::string> ids;
  for (const auto& t : changes.upserts) ids.push_back(t.transaction_id);
  CHECK(ids == std::vector<std::string>{"new", "waited"});
  CHECK(changes.upserts[0].amount_minor == -1);
  REQUIRE(changes.rejected.size() == 2);
  CHECK(changes.rejected[1].plaid_id == "still-odd");
}
