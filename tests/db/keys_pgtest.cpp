// The key hierarchy against PostgreSQL: sealing, opening, transplanted rows, shredding, rotation,
// rewrap under concurrent opens, destruction and root rotation.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>

#include <pqxx/pqxx>

#include "connectors/stripe/store.hpp"
#include "crypto/random.hpp"
#include "db/audit.hpp"
#include "db/keys.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;
using test::scratch_database;

namespace {

constexpr std::string_view plaid_token = "access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970";

crypto::secret_context plaid_context(const core::uuid& tenant, const core::uuid& secret_id) {
  return {.purpose = crypto::secret_purpose::plaid_access_token,
          .tenant = tenant,
          .secret_id = secret_id,
          .subject_id = "conn-" + secret_id.to_string(),
          .environment = "sandbox"};
}

struct keys_fixture {
  scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool(std::size_t{4});
  std::unique_ptr<db::key_store> keys = test::test_key_store();
  core::uuid tenant = ledger::create_tenant(*connections, *keys, "Keys Ltd");

  core::uuid seal(const crypto::secret_context& context, std::string_view plaintext) {
    db::with_tenant(*connections, context.tenant, [&](pqxx::work& tx) {
      keys->seal_secret(tx, context, crypto::secret::copy_of(plaintext), "test");
    });
    return context.secret_id;
  }
  core::uuid seal_plaid(const core::uuid& for_tenant, std::string_view plaintext = plaid_token) {
    return seal(plaid_context(for_tenant, crypto::random_uuid()), plaintext);
  }
  std::string open(const crypto::secret_context& context) {
    return db::with_tenant(*connections, context.tenant, [&](pqxx::work& tx) {
      return std::string(keys->open_secret(tx, context).reveal().text());
    });
  }
  std::string open_plaid(const core::uuid& for_tenant, const core::uuid& secret_id) {
    return open(plaid_context(for_tenant, secret_id));
  }
  std::int64_t admin_count(const std::string& sql, const std::string& parameter) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    return tx.exec_params1(sql, parameter)[0].as<std::int64_t>();
  }
};

}  // namespace

TEST_CASE("a sealed secret opens to its plaintext and the seal is audited without the secret", "[pg][keys]") {
  keys_fixture f;
  const core::uuid secret_id = f.seal_plaid(f.tenant);
  CHECK(f.open_plaid(f.tenant, secret_id) == plaid_token);

  const auto admin = f.database.connect_as_admin();
  pqxx::work tx(*admin);
  const auto row = tx.exec_params1(
      "SELECT kek_version, length(envelope), length(wrapped_data_key) FROM bankworker.sealed_secrets"
      " WHERE secret_id = $1",
      secret_id.to_string());
  CHECK(row[0].as<int>() == 1);
  CHECK(row[1].as<std::size_t>() == crypto::envelope_overhead_bytes + plaid_token.size());
  CHECK(row[2].as<std::size_t>() == crypto::wrapped_key_bytes);
  const auto audit = tx.exec_params1(
      "SELECT action, subject, details::text FROM bankworker.audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
      f.tenant.to_string());
  CHECK(audit[0].as<std::string>() == "secret.sealed");
  CHECK(audit[1].as<std::string>() == secret_id.to_string());
  CHECK(audit[2].as<std::string>().find(plaid_token) == std::string::npos);
}

TEST_CASE("a new tenant gets key version 1 and a tenant.created audit row in the same transaction", "[pg][keys]") {
  keys_fixture f;
  const auto admin = f.database.connect_as_admin();
  pqxx::work tx(*admin);
  CHECK(tx.exec_params1("SELECT count(*) FROM bankworker.tenant_keys WHERE tenant_id = $1 AND version = 1"
                        " AND state = 'primary'",
                        f.tenant.to_string())[0]
            .as<int>() == 1);
  CHECK(tx.exec_params1("SELECT action FROM bankworker.audit_log WHERE tenant_id = $1 AND seq = 1",
                        f.tenant.to_string())[0]
            .as<std::string>() == "tenant.created");
  // The tenant key is stored only wrapped: its 72 bytes are nonce, ciphertext and tag.
  CHECK(tx.exec_params1("SELECT length(wrapped_key) FROM bankworker.tenant_keys WHERE tenant_id = $1",
                        f.tenant.to_string())[0]
            .as<int>() == 72);
}

TEST_CASE("a ciphertext moved to another row, purpose or tenant in the database does not open", "[pg][keys]") {
  keys_fixture f;
  const core::uuid other_tenant = ledger::create_tenant(*f.connections, *f.keys, "Other Ltd");
  const crypto::secret_context token = plaid_context(f.tenant, crypto::random_uuid());
  f.seal(token, plaid_token);
  crypto::secret_context api_key{.purpose = crypto::secret_purpose::stripe_api_key,
                                 .tenant = f.tenant,
                                 .secret_id = crypto::random_uuid(),
                                 .subject_id = "acct_1",
                                 .environment = ""};
  f.seal(api_key, "sk_test_51Hxyzxyzxyzxyzxyz");
  const auto admin = f.database.connect_as_admin();

  SECTION("another row of the same tenant and purpose") {
    const crypto::secret_context victim = plaid_context(f.tenant, crypto::random_uuid());
    f.seal(victim, "access-sandbox-00000000-0000-4000-8000-000000000000");
    pqxx::work tx(*admin);
    tx.exec_params0("UPDATE bankworker.sealed_secrets v SET envelope = s.envelope, wrapped_data_key = s.wrapped_data_key"
                    " FROM bankworker.sealed_secrets s WHERE s.secret_id = $1 AND v.secret_id = $2",
                    token.secret_id.to_string(), victim.secret_id.to_string());
    tx.commit();
    CHECK_THROWS_AS(f.open(victim), crypto::envelope_error);
  }
  SECTION("another purpose") {
    pqxx::work tx(*admin);
    tx.exec_params0("UPDATE bankworker.sealed_secrets v SET envelope = s.envelope, wrapped_data_key = s.wrapped_data_key"
                    " FROM bankworker.sealed_secrets s WHERE s.secret_id = $1 AND v.secret_id = $2",
                    token.secret_id.to_string(), api_key.secret_id.to_string());
    tx.commit();
    CHECK_THROWS_AS(f.open(api_key), crypto::envelope_error);
  }
  SECTION("another tenant, refused from the header before any decryption") {
    pqxx::work tx(*admin);
    tx.exec_params0("INSERT INTO bankworker.sealed_secrets (tenant_id, secret_id, purpose, subject_id, kek_version,"
                    " wrapped_data_key, envelope) SELECT $1, secret_id, purpose, subject_id, kek_version,"
                    " wrapped_data_key, envelope FROM bankworker.sealed_secrets WHERE secret_id = $2",
                    other_tenant.to_string(), token.secret_id.to_string());
    tx.commit();
    try {
      f.open(plaid_context(other_tenant, token.secret_id));
      FAIL("opened another tenant's ciphertext");
    } catch (const crypto::envelope_error& error) {
      CHECK(error.failure() == crypto::envelope_failure::wrong_tenant);
    }
  }
  SECTION("a header changed to the row's columns but not the wrapped key column") {
    pqxx::work tx(*admin);
    tx.exec_params0("UPDATE bankworker.sealed_secrets SET wrapped_data_key = '\\x00'::bytea WHERE secret_id = $1",
                    token.secret_id.to_string());
    tx.commit();
    CHECK_THROWS_AS(f.open(token), db::key_error);
  }
}

TEST_CASE("after shredding, the secret does not open and its bytes are gone from the table", "[pg][keys]") {
  keys_fixture f;
  const crypto::secret_context context = plaid_context(f.tenant, crypto::random_uuid());
  f.seal(context, plaid_token);
  std::string envelope_hex;
  {
    const auto admin = f.database.connect_as_admin();
    pqxx::work tx(*admin);
    envelope_hex = tx.exec_params1("SELECT encode(substr(envelope, 100), 'hex') FROM bankworker.sealed_secrets"
                                   " WHERE secret_id = $1",
                                   context.secret_id.to_string())[0]
                       .as<std::string>();
  }
  const bool shredded = db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
    return f.keys->shred_secret(tx, f.tenant, context.secret_id, "test");
  });
  CHECK(shredded);
  try {
    f.open(context);
    FAIL("a shredded secret opened");
  } catch (const db::key_error& error) {
    CHECK(error.failure() == db::key_failure::secret_not_found);
  }
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE position(decode($1, 'hex') in envelope) > 0",
                      envelope_hex) == 0);
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE secret_id = $1::uuid",
                      context.secret_id.to_string()) == 0);
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'secret.shredded' AND subject = $1",
                      context.secret_id.to_string()) == 1);
}

TEST_CASE("destroying a tenant's keys shreds its secrets, keeps metadata and leaves other tenants alone",
          "[pg][keys]") {
  keys_fixture f;
  const core::uuid other = ledger::create_tenant(*f.connections, *f.keys, "Other Ltd");
  const core::uuid mine = f.seal_plaid(f.tenant);
  const core::uuid theirs = f.seal_plaid(other);
  db::with_tenant(*f.connections, f.tenant,
                  [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });
  const std::size_t shredded = db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
    return f.keys->destroy_tenant_keys(tx, f.tenant, "test");
  });
  CHECK(shredded == 1);
  CHECK_THROWS_AS(f.open_plaid(f.tenant, mine), db::key_error);
  CHECK(f.open_plaid(other, theirs) == plaid_token);
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.tenant_keys WHERE tenant_id = $1::uuid"
                      " AND state = 'destroyed' AND wrapped_key IS NULL AND destroyed_at IS NOT NULL",
                      f.tenant.to_string()) == 2);
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.tenants WHERE tenant_id = $1::uuid AND status = 'offboarded'",
                      f.tenant.to_string()) == 1);
  // Nothing can be sealed for it any more, and its audit chain still verifies.
  CHECK_THROWS_AS(f.seal_plaid(f.tenant), db::key_error);
  CHECK_FALSE(db::verify_audit_chain(*f.connections, *f.keys, f.tenant).broken.has_value());
}

TEST_CASE("a sealed token never appears in pg_dump of the database", "[pg][keys]") {
  keys_fixture f;
  f.seal_plaid(f.tenant);
  const auto dump = test::run_process("/usr/bin/pg_dump", {"--data-only", "--dbname", f.database.url()}, {});
  REQUIRE(dump.exit_code == 0);
  CHECK(dump.out.find("sealed_secrets") != std::string::npos);
  CHECK(dump.out.find(plaid_token) == std::string::npos);
  CHECK(dump.out.find("8ab976e6-64bc-4b38-98f7-731e7a349970") == std::string::npos);
  CHECK(dump.out.find(crypto::to_hex(std::span<const std::uint8_t>(
            reinterpret_cast<const std::uint8_t*>(plaid_token.data()), plaid_token.size()))) == std::string::npos);
}

TEST_CASE("after a rotation old secrets still open and new ones are sealed under the new version", "[pg][keys]") {
  keys_fixture f;
  const core::uuid old_secret = f.seal_plaid(f.tenant);
  const std::uint32_t version = db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
    return f.keys->rotate_tenant_key(tx, f.tenant, "test");
  });
  CHECK(version == 2);
  const core::uuid new_secret = f.seal_plaid(f.tenant, "access-sandbox-11111111-2222-4333-8444-555555555555");
  CHECK(f.open_plaid(f.tenant, old_secret) == plaid_token);
  CHECK(f.open_plaid(f.tenant, new_secret) == "access-sandbox-11111111-2222-4333-8444-555555555555");
  const auto status = db::with_tenant(*f.connections, f.tenant,
                                      [&](pqxx::work& tx) { return db::key_status(tx, f.tenant); });
  REQUIRE(status.size() == 2);
  CHECK(status[0].state == "active");
  CHECK(status[0].secrets == 1);
  CHECK(status[1].state == "primary");
  CHECK(status[1].secrets == 1);
}

TEST_CASE("rewrap runs a batch at a time, and an interrupted rewrap resumes where it stopped", "[pg][keys]") {
  keys_fixture f;
  std::vector<core::uuid> secrets;
  for (int i = 0; i < 25; ++i) secrets.push_back(f.seal_plaid(f.tenant));
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });

  CHECK(f.keys->rewrap_batch(*f.connections, f.tenant, "test", 10) == 10);  // then "crash"
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE tenant_id = $1::uuid AND kek_version = 1",
                      f.tenant.to_string()) == 15);
  for (const auto& id : secrets) CHECK(f.open_plaid(f.tenant, id) == plaid_token);

  const db::rewrap_report report = f.keys->rewrap_tenant(*f.connections, f.tenant, "test", 10);
  CHECK(report.rewrapped == 15);
  CHECK(report.batches == 2);
  CHECK(report.remaining == 0);
  CHECK(report.retired == std::vector<std::uint32_t>{1});
  for (const auto& id : secrets) CHECK(f.open_plaid(f.tenant, id) == plaid_token);
  CHECK_FALSE(db::verify_audit_chain(*f.connections, *f.keys, f.tenant).broken.has_value());
}

TEST_CASE("a version is not retired while a secret still needs it", "[pg][keys]") {
  keys_fixture f;
  f.seal_plaid(f.tenant);
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });
  CHECK(f.keys->retire_unused_versions(*f.connections, f.tenant, "test").empty());
  f.keys->rewrap_tenant(*f.connections, f.tenant, "test");
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.tenant_keys WHERE tenant_id = $1::uuid AND version = 1"
                      " AND state = 'retired' AND wrapped_key IS NULL",
                      f.tenant.to_string()) == 1);
}

TEST_CASE("rotate then rewrap 10,000 secrets while another thread opens them: zero failures", "[pg][keys][slow]") {
  keys_fixture f;
  constexpr int secret_count = 10'000;
  std::vector<core::uuid> secrets;
  secrets.reserve(secret_count);
  // Sealed in a few large transactions to keep the set-up short.
  for (int chunk = 0; chunk < 10; ++chunk) {
    db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
      for (int i = 0; i < secret_count / 10; ++i) {
        const crypto::secret_context context = plaid_context(f.tenant, crypto::random_uuid());
        f.keys->seal_secret(tx, context, crypto::secret::copy_of(plaid_token), "test");
        secrets.push_back(context.secret_id);
      }
    });
  }
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });

  std::atomic<bool> stop{false};
  std::atomic<long> opened{0};
  std::atomic<long> failures{0};
  std::string first_failure;
  const std::uint32_t seed = std::random_device{}();
  INFO("opener seed " << seed);
  std::thread opener([&] {
    std::mt19937 random(seed);
    std::uniform_int_distribution<std::size_t> pick(0, secrets.size() - 1);
    while (!stop.load()) {
      try {
        if (f.open_plaid(f.tenant, secrets[pick(random)]) != plaid_token) ++failures;
        ++opened;
      } catch (const std::exception& error) {
        if (failures++ == 0) first_failure = error.what();
      }
    }
  });
  const db::rewrap_report report = f.keys->rewrap_tenant(*f.connections, f.tenant, "test", 500);
  stop = true;
  opener.join();

  INFO("first failure: " << first_failure);
  CHECK(failures == 0);
  CHECK(opened > 0);
  CHECK(report.rewrapped == secret_count);
  CHECK(report.remaining == 0);
  CHECK(report.retired == std::vector<std::uint32_t>{1});
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE tenant_id = $1::uuid AND kek_version <> 2",
                      f.tenant.to_string()) == 0);
  for (std::size_t i = 0; i < secrets.size(); i += 997) CHECK(f.open_plaid(f.tenant, secrets[i]) == plaid_token);
}

TEST_CASE("a root rotation rewraps every tenant key and the signing seed so the old root key can go",
          "[pg][keys]") {
  keys_fixture f;
  const core::uuid other = ledger::create_tenant(*f.connections, *f.keys, "Other Ltd");
  const core::uuid mine = f.seal_plaid(f.tenant);
  const core::uuid theirs = f.seal_plaid(other);
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });

  const test::root_key_file old_file;
  const test::root_key_file new_file(test::other_root_key_hex);
  crypto::root_key_ring ring(crypto::file_root_key::load(new_file.path()));
  ring.add_previous(crypto::file_root_key::load(old_file.path()));
  db::key_store rotating(std::move(ring));
  rotating.prepare(*f.connections);
  std::size_t rewrapped = 0;
  for (const core::uuid& tenant : db::list_tenants(*f.connections)) {
    rewrapped += db::with_tenant(*f.connections, tenant, [&](pqxx::work& tx) {
      return rotating.rewrap_tenant_keys_to_primary_root(tx, tenant, "test");
    });
  }
  CHECK(rewrapped == 3);  // two versions of one tenant, one of the other
  CHECK(rotating.rewrap_signing_keys_to_primary_root(*f.connections) == 1);

  // A process that knows only the new root key opens everything and verifies every chain.
  auto fresh = test::test_key_store({}, test::other_root_key_hex);
  fresh->prepare(*f.connections);
  f.keys = std::move(fresh);
  CHECK(f.open_plaid(f.tenant, mine) == plaid_token);
  CHECK(f.open_plaid(other, theirs) == plaid_token);
  CHECK_FALSE(db::verify_audit_chain(*f.connections, *f.keys, f.tenant).broken.has_value());
  CHECK_FALSE(db::verify_audit_chain(*f.connections, *f.keys, other).broken.has_value());
  // And one that knows only the old root key can no longer unwrap anything.
  auto stale = test::test_key_store();
  CHECK_THROWS_AS(stale->prepare(*f.connections), crypto::root_key_error);
}

// --- Revocation destroys (issue 23, part 3) ------------------------------------------------------

namespace {

// What a backup, a dump or a replica taken at some moment holds of one secret: its sealed row,
// its shred key row (if it had one), and the tenant's key rows.
struct stored_copy {
  std::string sealed_row_values;  // the sealed row as SQL values for a restore
  crypto::bytes envelope;
  std::optional<crypto::bytes> shred_key;
  struct tenant_key_row {
    std::uint32_t version = 0;
    std::string root_key_id;
    crypto::bytes wrapped_key;
  };
  std::vector<tenant_key_row> tenant_keys;
};

crypto::bytes bytes_of(const pqxx::field& field) {
  const pqxx::binarystring data(field);
  return {reinterpret_cast<const std::uint8_t*>(data.data()),
          reinterpret_cast<const std::uint8_t*>(data.data()) + data.size()};
}

stored_copy copy_rows(keys_fixture& f, const core::uuid& secret_id) {
  const auto admin = f.database.connect_as_admin();
  pqxx::work tx(*admin);
  stored_copy copy;
  const auto row = tx.exec_params1("SELECT envelope FROM bankworker.sealed_secrets WHERE secret_id = $1",
                                   secret_id.to_string());
  copy.envelope = bytes_of(row[0]);
  const auto shred = tx.exec_params("SELECT shred_key FROM bankworker.secret_shred_keys WHERE secret_id = $1",
                                    secret_id.to_string());
  if (!shred.empty()) copy.shred_key = bytes_of(shred[0][0]);
  for (const auto& key : tx.exec_params("SELECT version, root_key_id, wrapped_key FROM bankworker.tenant_keys"
                                        " WHERE tenant_id = $1 AND wrapped_key IS NOT NULL",
                                        f.tenant.to_string())) {
    copy.tenant_keys.push_back({key[0].as<std::uint32_t>(), key[1].as<std::string>(), bytes_of(key[2])});
  }
  // The whole sealed row, for putting it back as a restore from backup would.
  tx.exec_params0("CREATE TABLE IF NOT EXISTS public.backup_sealed AS SELECT * FROM bankworker.sealed_secrets WITH NO DATA");
  tx.exec_params0("CREATE TABLE IF NOT EXISTS public.backup_shred AS SELECT * FROM bankworker.secret_shred_keys WITH NO DATA");
  tx.exec_params0("INSERT INTO public.backup_sealed SELECT * FROM bankworker.sealed_secrets WHERE secret_id = $1",
                  secret_id.to_string());
  tx.exec_params0("INSERT INTO public.backup_shred SELECT * FROM bankworker.secret_shred_keys WHERE secret_id = $1",
                  secret_id.to_string());
  tx.commit();
  return copy;
}

// Puts the copied sealed row back (and its shred key row too, when `with_shred_key`).
void restore_rows(keys_fixture& f, const core::uuid& secret_id, bool with_shred_key) {
  const auto admin = f.database.connect_as_admin();
  pqxx::work tx(*admin);
  tx.exec_params0("INSERT INTO bankworker.sealed_secrets SELECT * FROM public.backup_sealed WHERE secret_id = $1",
                  secret_id.to_string());
  if (with_shred_key) {
    tx.exec_params0("INSERT INTO bankworker.secret_shred_keys SELECT * FROM public.backup_shred WHERE secret_id = $1",
                    secret_id.to_string());
  }
  tx.commit();
}

crypto::secret secret_of(const crypto::bytes& data) {
  return crypto::secret::copy_of(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

// The attacker with the envelope code and every key the system still holds: each tenant key
// version still stored wrapped (unwrapped by every root key of `ring`, plus the copy's own key
// rows if `dump` holds them), each with no shred key, with every shred key still stored (any
// tenant's) and with the copy's own if the copy holds one, and each with the algorithm byte set
// back to 1. Returns the plaintext if any combination opens.
std::optional<std::string> open_with_everything(keys_fixture& f, const crypto::root_key_ring& ring,
                                                const stored_copy& copy, const crypto::secret_context& context,
                                                bool dump) {
  std::vector<std::pair<std::uint32_t, crypto::secret>> keks;
  std::vector<crypto::secret> shred_keys;
  std::vector<stored_copy::tenant_key_row> key_rows;
  {
    const auto admin = f.database.connect_as_admin();
    pqxx::work tx(*admin);
    for (const auto& key : tx.exec_params("SELECT version, root_key_id, wrapped_key FROM bankworker.tenant_keys"
                                          " WHERE tenant_id = $1 AND wrapped_key IS NOT NULL",
                                          context.tenant.to_string())) {
      key_rows.push_back({key[0].as<std::uint32_t>(), key[1].as<std::string>(), bytes_of(key[2])});
    }
    for (const auto& key : tx.exec("SELECT shred_key FROM bankworker.secret_shred_keys")) {
      shred_keys.push_back(secret_of(bytes_of(key[0])));
    }
  }
  if (dump) key_rows.insert(key_rows.end(), copy.tenant_keys.begin(), copy.tenant_keys.end());
  if (dump && copy.shred_key) shred_keys.push_back(secret_of(*copy.shred_key));
  for (const auto& row : key_rows) {
    try {
      keks.emplace_back(row.version, ring.find(row.root_key_id)
                                         .unwrap(row.wrapped_key, crypto::tenant_key_associated_data(
                                                                      context.tenant, row.version, row.root_key_id)));
    } catch (const crypto::root_key_error&) {
      // wrapped by a root key that is gone
    }
  }
  const crypto::bytes legacy = [&] {
    crypto::bytes changed = copy.envelope;
    changed[1] = crypto::algorithm_xchacha20poly1305_blake2b;
    return changed;
  }();
  for (const auto& [version, kek] : keks) {
    for (const crypto::bytes* envelope : {&copy.envelope, &legacy}) {
      const crypto::envelope_view view = crypto::parse_envelope(*envelope, context.tenant);
      std::vector<const crypto::secret*> candidates{nullptr};
      for (const auto& key : shred_keys) candidates.push_back(&key);
      for (const crypto::secret* shred_key : candidates) {
        try {
          return std::string(crypto::open_envelope(kek, context, view, shred_key).reveal().text());
        } catch (const crypto::envelope_error&) {
        }
      }
    }
  }
  return std::nullopt;
}

crypto::root_key_ring ring_of(std::initializer_list<std::string_view> hex_keys) {
  crypto::root_key_ring ring;
  bool first = true;
  for (const std::string_view hex : hex_keys) {
    const test::root_key_file file(hex);
    if (first) ring = crypto::root_key_ring(crypto::file_root_key::load(file.path()));
    else ring.add_previous(crypto::file_root_key::load(file.path()));
    first = false;
  }
  return ring;
}

}  // namespace

TEST_CASE("a sealed row copied before its shred opens afterwards neither through the key store nor through the"
          " envelope code with every key still stored",
          "[pg][keys][shred]") {
  keys_fixture f;
  const crypto::secret_context victim = plaid_context(f.tenant, crypto::random_uuid());
  f.seal(victim, plaid_token);
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });
  f.seal_plaid(f.tenant, "access-sandbox-11111111-1111-4111-8111-111111111111");  // other secrets' shred keys stay
  f.seal_plaid(ledger::create_tenant(*f.connections, *f.keys, "Other Ltd"));
  const crypto::root_key_ring ring = ring_of({test::test_root_key_hex});

  const stored_copy copy = copy_rows(f, victim.secret_id);
  REQUIRE(copy.shred_key.has_value());
  CHECK(copy.envelope[1] == crypto::algorithm_xchacha20poly1305_blake2b_shred);
  // The attack works before the shred (so the checks below can fail).
  CHECK(open_with_everything(f, ring, copy, victim, false) == std::string(plaid_token));

  CHECK(db::with_tenant(*f.connections, f.tenant,
                        [&](pqxx::work& tx) { return f.keys->shred_secret(tx, f.tenant, victim.secret_id, "test"); }));
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.secret_shred_keys WHERE secret_id = $1::uuid",
                      victim.secret_id.to_string()) == 0);

  // Through the envelope code, with every tenant key version and every shred key still stored.
  CHECK_FALSE(open_with_everything(f, ring, copy, victim, false).has_value());
  // Through the worker's own path: the sealed row restored from the copy, as a backup restore would.
  restore_rows(f, victim.secret_id, false);
  try {
    f.open(victim);
    FAIL("a restored copy of a shredded secret opened");
  } catch (const crypto::envelope_error& error) {
    CHECK(error.failure() == crypto::envelope_failure::shred_key_missing);
  }
  // Rewrapping the restored row to the primary version cannot bring it back either.
  CHECK_THROWS(f.keys->rewrap_tenant(*f.connections, f.tenant, "test"));
}

TEST_CASE("a stripe webhook secret copied before `stripe secret remove` opens afterwards through no path",
          "[pg][keys][shred]") {
  keys_fixture f;
  const auto sealed = [&](std::string_view text) {
    return db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
      return stripe::add_webhook_secret(tx, *f.keys, f.tenant, crypto::secret::copy_of(text), "test");
    });
  };
  const core::uuid removed = sealed("whsec_removed0000000000000000000000");
  sealed("whsec_kept000000000000000000000000000");
  const crypto::secret_context context{.purpose = crypto::secret_purpose::stripe_webhook_secret,
                                       .tenant = f.tenant,
                                       .secret_id = removed,
                                       .subject_id = std::string(stripe::stripe_endpoint_subject),
                                       .environment = {}};
  const stored_copy copy = copy_rows(f, removed);
  const crypto::root_key_ring ring = ring_of({test::test_root_key_hex});
  CHECK(open_with_everything(f, ring, copy, context, false) == std::string("whsec_removed0000000000000000000000"));

  CHECK(db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
    return stripe::remove_webhook_secret(tx, *f.keys, f.tenant, removed, "test");
  }));
  CHECK_FALSE(open_with_everything(f, ring, copy, context, false).has_value());
  restore_rows(f, removed, false);
  // The webhook path loads every secret of the endpoint: the restored one must not come back.
  bool removed_came_back = false;
  try {
    db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
      for (const auto& secret : stripe::load_webhook_secrets(tx, *f.keys, f.tenant)) {
        if (secret.reveal().text() == "whsec_removed0000000000000000000000") removed_came_back = true;
      }
    });
  } catch (const crypto::envelope_error& error) {
    CHECK(error.failure() == crypto::envelope_failure::shred_key_missing);
  }
  CHECK_FALSE(removed_came_back);
}

TEST_CASE("a dump holding the sealed row and its shred key opens until the tenant key is rotated away and the old"
          " root key destroyed, then never",
          "[pg][keys][shred]") {
  keys_fixture f;
  const crypto::secret_context victim = plaid_context(f.tenant, crypto::random_uuid());
  f.seal(victim, plaid_token);
  const core::uuid kept = f.seal_plaid(f.tenant);
  const stored_copy dump = copy_rows(f, victim.secret_id);
  CHECK(db::with_tenant(*f.connections, f.tenant,
                        [&](pqxx::work& tx) { return f.keys->shred_secret(tx, f.tenant, victim.secret_id, "test"); }));

  // The backup window: the dump holds both rows, and the live tenant key still opens them.
  CHECK(open_with_everything(f, ring_of({test::test_root_key_hex}), dump, victim, true) == std::string(plaid_token));
  // A root rotation alone rewraps the same tenant key: the window stays open (crypto/README.md).
  {
    db::key_store rotating(ring_of({test::other_root_key_hex, test::test_root_key_hex}));
    rotating.prepare(*f.connections);
    db::with_tenant(*f.connections, f.tenant,
                    [&](pqxx::work& tx) { rotating.rewrap_tenant_keys_to_primary_root(tx, f.tenant, "test"); });
    rotating.rewrap_signing_keys_to_primary_root(*f.connections);
  }
  CHECK(open_with_everything(f, ring_of({test::other_root_key_hex}), dump, victim, true) == std::string(plaid_token));

  // The closing procedure: keys rotate --tenant, keys rewrap (the old version retires and its
  // wrapped key is erased), then the old root key (the dump's tenant keys are under it) is destroyed.
  auto fresh = test::test_key_store({}, test::other_root_key_hex);
  fresh->prepare(*f.connections);
  f.keys = std::move(fresh);
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });
  const db::rewrap_report report = f.keys->rewrap_tenant(*f.connections, f.tenant, "test");
  CHECK(report.retired == std::vector<std::uint32_t>{1});
  CHECK(f.open_plaid(f.tenant, kept) == plaid_token);
  CHECK_FALSE(open_with_everything(f, ring_of({test::other_root_key_hex}), dump, victim, true).has_value());
  // Even with the whole dump restored, the worker's path opens nothing.
  restore_rows(f, victim.secret_id, true);
  CHECK_THROWS(f.open(victim));
}

namespace {

// Writes `context`'s secret as a row sealed before migration 0026 would be: algorithm 1 under key
// version 1, no shred key row.
void insert_legacy_row(keys_fixture& f, const crypto::secret_context& context, std::string_view plaintext) {
  const crypto::root_key_ring ring = ring_of({test::test_root_key_hex});
  const auto admin = f.database.connect_as_admin();
  pqxx::work tx(*admin);
  const auto key = tx.exec_params1("SELECT root_key_id, wrapped_key FROM bankworker.tenant_keys WHERE tenant_id = $1"
                                   " AND version = 1",
                                   context.tenant.to_string());
  const crypto::secret kek = ring.find(key[0].as<std::string>())
                                 .unwrap(bytes_of(key[1]), crypto::tenant_key_associated_data(
                                                               context.tenant, 1, key[0].as<std::string>()));
  const crypto::sealed_envelope sealed = crypto::seal_envelope(kek, 1, context, plaintext);
  REQUIRE(sealed.envelope[1] == crypto::algorithm_xchacha20poly1305_blake2b);
  tx.exec_params0("INSERT INTO bankworker.sealed_secrets (tenant_id, secret_id, purpose, subject_id, kek_version,"
                  " wrapped_data_key, envelope) VALUES ($1, $2, $3, $4, 1, $5, $6)",
                  context.tenant.to_string(), context.secret_id.to_string(), std::string(crypto::to_string(context.purpose)),
                  context.subject_id,
                  pqxx::binarystring(sealed.wrapped_data_key.data(), sealed.wrapped_data_key.size()),
                  pqxx::binarystring(sealed.envelope.data(), sealed.envelope.size()));
  tx.commit();
}

std::int64_t legacy_secrets_of(keys_fixture& f, std::uint32_t version) {
  return db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) {
    for (const auto& status : db::key_status(tx, f.tenant)) {
      if (status.version == version) return status.legacy_secrets;
    }
    return std::int64_t{-1};
  });
}

}  // namespace

TEST_CASE("a legacy algorithm-1 row sealed before migration 0026 still opens, and rewraps", "[pg][keys][shred]") {
  keys_fixture f;
  const crypto::secret_context legacy = plaid_context(f.tenant, crypto::random_uuid());
  insert_legacy_row(f, legacy, plaid_token);
  CHECK(f.open(legacy) == plaid_token);
  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });
  CHECK(f.keys->rewrap_tenant(*f.connections, f.tenant, "test").rewrapped == 1);
  CHECK(f.open(legacy) == plaid_token);
  CHECK(db::with_tenant(*f.connections, f.tenant,
                        [&](pqxx::work& tx) { return f.keys->shred_secret(tx, f.tenant, legacy.secret_id, "test"); }));
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'secret.shredded' AND subject = $1"
                      " AND details->>'shred_key' = '0'",
                      legacy.secret_id.to_string()) == 1);
}

TEST_CASE("keys rewrap reseals legacy algorithm-1 rows under shred keys, so a copy taken after it opens through no"
          " path once shredded",
          "[pg][keys][shred]") {
  keys_fixture f;
  // A Plaid token's associated data binds its connection's environment, which the reseal reads from
  // the connection row; a Stripe secret binds none.
  const core::uuid connection = crypto::random_uuid();
  {
    const auto admin = f.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params0("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
                    " VALUES ($1, $2, 'sandbox', 'active')",
                    f.tenant.to_string(), connection.to_string());
    tx.commit();
  }
  crypto::secret_context victim = plaid_context(f.tenant, crypto::random_uuid());
  victim.subject_id = connection.to_string();
  const crypto::secret_context webhook{.purpose = crypto::secret_purpose::stripe_webhook_secret,
                                       .tenant = f.tenant,
                                       .secret_id = crypto::random_uuid(),
                                       .subject_id = std::string(stripe::stripe_endpoint_subject),
                                       .environment = {}};
  // A token whose connection row is gone: its environment is unknown, so it stays legacy (and is
  // counted as such) but still moves to the new version.
  const crypto::secret_context orphan = plaid_context(f.tenant, crypto::random_uuid());
  insert_legacy_row(f, victim, plaid_token);
  insert_legacy_row(f, webhook, "whsec_legacy000000000000000000000000");
  insert_legacy_row(f, orphan, plaid_token);
  f.seal_plaid(f.tenant, "access-sandbox-22222222-2222-4222-8222-222222222222");  // already algorithm 2
  CHECK(legacy_secrets_of(f, 1) == 3);

  db::with_tenant(*f.connections, f.tenant, [&](pqxx::work& tx) { f.keys->rotate_tenant_key(tx, f.tenant, "test"); });
  const db::rewrap_report report = f.keys->rewrap_tenant(*f.connections, f.tenant, "test", 1);
  CHECK(report.resealed == 2);
  CHECK(report.rewrapped == 2);  // the orphan (still algorithm 1) and the algorithm-2 row
  CHECK(report.legacy_remaining == 1);
  CHECK(report.remaining == 0);
  CHECK(report.retired == std::vector<std::uint32_t>{1});
  CHECK(legacy_secrets_of(f, 2) == 1);
  CHECK(f.admin_count("SELECT coalesce(sum((details->>'rows')::int), 0) FROM bankworker.audit_log"
                      " WHERE tenant_id = $1::uuid AND action = 'keys.resealed'",
                      f.tenant.to_string()) == 2);
  CHECK(f.open(victim) == plaid_token);
  CHECK(f.open(webhook) == "whsec_legacy000000000000000000000000");
  CHECK(f.open(orphan) == plaid_token);
  // Re-running finds nothing more to reseal.
  CHECK(f.keys->rewrap_tenant(*f.connections, f.tenant, "test").resealed == 0);

  // The copy, taken after the reseal: now algorithm 2 with a shred key of its own, and the attack
  // works before the shred (so the checks below can fail).
  const stored_copy copy = copy_rows(f, victim.secret_id);
  REQUIRE(copy.shred_key.has_value());
  CHECK(copy.envelope[1] == crypto::algorithm_xchacha20poly1305_blake2b_shred);
  const crypto::root_key_ring ring = ring_of({test::test_root_key_hex});
  CHECK(open_with_everything(f, ring, copy, victim, false) == std::string(plaid_token));

  CHECK(db::with_tenant(*f.connections, f.tenant,
                        [&](pqxx::work& tx) { return f.keys->shred_secret(tx, f.tenant, victim.secret_id, "test"); }));
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'secret.shredded' AND subject = $1"
                      " AND details->>'shred_key' = '1'",
                      victim.secret_id.to_string()) == 1);
  CHECK_FALSE(open_with_everything(f, ring, copy, victim, false).has_value());
  restore_rows(f, victim.secret_id, false);
  try {
    f.open(victim);
    FAIL("a restored copy of a resealed, shredded legacy secret opened");
  } catch (const crypto::envelope_error& error) {
    CHECK(error.failure() == crypto::envelope_failure::shred_key_missing);
  }
}

TEST_CASE("keys rotate --root --new-tenant-keys closes the backup window in one command: a dump holding the sealed"
          " row and its shred key opens before, and through no path once the old root key is destroyed",
          "[pg][keys][shred][cli]") {
  keys_fixture f;
  const core::uuid other = ledger::create_tenant(*f.connections, *f.keys, "Other Ltd");
  const crypto::secret_context victim = plaid_context(f.tenant, crypto::random_uuid());
  f.seal(victim, plaid_token);
  const core::uuid kept = f.seal_plaid(f.tenant);
  const core::uuid theirs = f.seal_plaid(other);
  const stored_copy dump = copy_rows(f, victim.secret_id);
  CHECK(db::with_tenant(*f.connections, f.tenant,
                        [&](pqxx::work& tx) { return f.keys->shred_secret(tx, f.tenant, victim.secret_id, "test"); }));
  // The window is open: the dump holds both rows, and the live tenant key opens them.
  CHECK(open_with_everything(f, ring_of({test::test_root_key_hex}), dump, victim, true) == std::string(plaid_token));

  // The one command, through the binary as an operator runs it.
  const test::root_key_file old_file;
  const test::root_key_file new_file(test::other_root_key_hex);
  const auto rotated = test::run_bankworker(
      {"--json", "keys", "rotate", "--root", "--root-key-file", new_file.path_text(), "--new-tenant-keys",
       "--batch-rows", "1"},
      {{"BANKWORKER_DATABASE_URL", f.database.runtime_url()}, {"BANKWORKER_ROOT_KEY_FILE", old_file.path_text()}});
  INFO(rotated.err);
  REQUIRE(rotated.exit_code == 0);
  CHECK_THAT(rotated.out, Catch::Contains("\"key_versions_rewrapped\":2,") &&
                              Catch::Contains("\"new_tenant_keys\":{\"tenants\":2,\"resealed\":0,\"rewrapped\":2,"
                                              "\"retired\":2,\"remaining\":0}"));
  // Nothing live is under the old root key any more, and no version 1 key survives to be unwrapped.
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.tenant_keys WHERE wrapped_key IS NOT NULL AND version = $1::int",
                      "1") == 0);
  CHECK(f.admin_count("SELECT count(*) FROM bankworker.tenant_keys WHERE wrapped_key IS NOT NULL AND state = $1",
                      "primary") == 2);

  // While the old root key still exists, the dump's own tenant key rows open it: destroying the old
  // key is the step that matters (the command's output says so).
  CHECK(open_with_everything(f, ring_of({test::other_root_key_hex, test::test_root_key_hex}), dump, victim, true) ==
        std::string(plaid_token));
  // The old root key destroyed: the dump opens with nothing that exists.
  CHECK_FALSE(open_with_everything(f, ring_of({test::other_root_key_hex}), dump, victim, true).has_value());

  // A worker on the new root key alone opens every live secret, and not the whole dump restored.
  auto fresh = test::test_key_store({}, test::other_root_key_hex);
  fresh->prepare(*f.connections);
  f.keys = std::move(fresh);
  CHECK(f.open_plaid(f.tenant, kept) == plaid_token);
  CHECK(f.open_plaid(other, theirs) == plaid_token);
  restore_rows(f, victim.secret_id, true);
  CHECK_THROWS(f.open(victim));
  CHECK_FALSE(db::verify_audit_chain(*f.connections, *f.keys, f.tenant).broken.has_value());
}
