// The audit chain against PostgreSQL: honest chains verify, concurrent appends stay gapless, and
// every kind of tampering by someone who bypasses the immutability trigger is named by row.
#include <catch2/catch.hpp>

#include <thread>

#include <pqxx/pqxx>

#include "db/audit.hpp"
#include "db/keys.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;
using test::scratch_database;

namespace {

struct audit_fixture {
  scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool(std::size_t{4});
  std::unique_ptr<db::key_store> keys = test::test_key_store();
  core::uuid tenant = ledger::create_tenant(*connections, *keys, "Audit Ltd");

  // Five more rows after tenant.created: seq 2..6.
  void append_rows(int count = 5) {
    for (int i = 0; i < count; ++i) {
      db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        db::append_audit(tx, *keys,
                         {.tenant = tenant,
                          .actor = "test",
                          .action = "connection.linked",
                          .subject = "conn-" + std::to_string(i),
                          .details = R"({"n": )" + std::to_string(i) + "}"});
      });
    }
  }
  db::audit_verification verify() { return db::verify_audit_chain(*connections, *keys, tenant); }

  // Runs `sql` as the cluster admin with triggers off, as a table owner bypassing them would.
  void tamper(const std::string& sql) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec("SET LOCAL session_replication_role = replica");
    tx.exec_params0(sql, tenant.to_string());
    tx.commit();
  }
};

}  // namespace

TEST_CASE("an honest chain verifies to its head", "[pg][audit]") {
  audit_fixture f;
  f.append_rows();
  const auto result = f.verify();
  CHECK_FALSE(result.broken.has_value());
  CHECK(result.rows == 6);
}

TEST_CASE("the audit log rejects UPDATE, DELETE and TRUNCATE while its trigger is on", "[pg][audit]") {
  audit_fixture f;
  const auto admin = f.database.connect_as_admin();
  for (const char* sql : {"UPDATE bankworker.audit_log SET actor = 'x'", "DELETE FROM bankworker.audit_log",
                          "TRUNCATE bankworker.audit_log CASCADE"}) {
    INFO(sql);
    pqxx::work tx(*admin);
    CHECK_THROWS_AS(tx.exec(sql), pqxx::sql_error);
  }
}

TEST_CASE("concurrent appends to one tenant's chain stay gapless and linear", "[pg][audit]") {
  audit_fixture f;
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) writers.emplace_back([&] { f.append_rows(25); });
  for (auto& writer : writers) writer.join();
  const auto result = f.verify();
  CHECK_FALSE(result.broken.has_value());
  CHECK(result.rows == 101);
}

TEST_CASE("audit verify names the first row after tampering by the table owner", "[pg][audit]") {
  audit_fixture f;
  f.append_rows();
  REQUIRE_FALSE(f.verify().broken.has_value());

  SECTION("an edited row") {
    f.tamper("UPDATE bankworker.audit_log SET details = '{\"n\": 99}' WHERE tenant_id = $1 AND seq = 3");
    const auto result = f.verify();
    REQUIRE(result.broken.has_value());
    CHECK(result.broken->seq == 3);
    CHECK_THAT(result.broken->reason, Catch::Contains("hash"));
  }
  SECTION("an edited row whose hash was recomputed without the signing key") {
    f.tamper("UPDATE bankworker.audit_log SET actor = 'mallory', hash = sha256(hash) WHERE tenant_id = $1 AND seq = 4");
    const auto result = f.verify();
    REQUIRE(result.broken.has_value());
    CHECK(result.broken->seq == 4);
  }
  SECTION("a deleted row") {
    f.tamper("DELETE FROM bankworker.audit_log WHERE tenant_id = $1 AND seq = 2");
    const auto result = f.verify();
    REQUIRE(result.broken.has_value());
    CHECK(result.broken->seq == 2);
    CHECK_THAT(result.broken->reason, Catch::Contains("missing"));
  }
  SECTION("reordered rows") {
    f.tamper("UPDATE bankworker.audit_log SET seq = 1000 WHERE tenant_id = $1 AND seq = 4");
    f.tamper("UPDATE bankworker.audit_log SET seq = 4 WHERE tenant_id = $1 AND seq = 5");
    f.tamper("UPDATE bankworker.audit_log SET seq = 5 WHERE tenant_id = $1 AND seq = 1000");
    const auto result = f.verify();
    REQUIRE(result.broken.has_value());
    CHECK(result.broken->seq == 4);
  }
  SECTION("a truncated chain") {
    f.tamper("DELETE FROM bankworker.audit_log WHERE tenant_id = $1 AND seq >= 5");
    const auto result = f.verify();
    REQUIRE(result.broken.has_value());
    CHECK(result.broken->seq == 5);
    CHECK_THAT(result.broken->reason, Catch::Contains("head"));
  }
  SECTION("a truncated chain whose head was moved back too is caught by an earlier checkpoint") {
    const auto before = f.verify();
    f.tamper("DELETE FROM bankworker.audit_log WHERE tenant_id = $1 AND seq >= 5");
    f.tamper("UPDATE bankworker.audit_heads h SET seq = 4, hash = l.hash FROM bankworker.audit_log l"
             " WHERE h.tenant_id = $1 AND l.tenant_id = h.tenant_id AND l.seq = 4");
    const auto after = f.verify();
    CHECK_FALSE(after.broken.has_value());  // the database alone cannot tell …
    CHECK(after.rows < before.rows);        // … but a checkpoint kept elsewhere can
  }
  SECTION("a swapped signing public key") {
    const auto admin = f.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec("UPDATE bankworker.audit_signing_keys SET public_key = decode(repeat('ab', 32), 'hex')");
    tx.commit();
    CHECK_THROWS_AS(f.verify(), crypto::root_key_error);
  }
}

TEST_CASE("a checkpoint of a verified chain verifies with the published key", "[pg][audit]") {
  audit_fixture f;
  f.append_rows();
  const auto result = f.verify();
  const std::string text = db::audit_checkpoint_text(*f.keys, result, "2026-11-22T01:00:00Z");
  const auto checkpoint = crypto::verify_checkpoint(text, f.keys->signing().verification_key());
  REQUIRE(checkpoint.has_value());
  CHECK(checkpoint->tenant == f.tenant);
  CHECK(checkpoint->size == 6);
  CHECK(checkpoint->head == result.head);
}
