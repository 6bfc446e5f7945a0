// The keys and audit commands through the real binary, as an operator runs them.
#include <catch2/catch.hpp>

#include <fstream>

#include <pqxx/pqxx>

#include "crypto/audit_signing.hpp"
#include "crypto/random.hpp"
#include "db/keys.hpp"
#include "db/tenant_scope.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/sim/vault_sim.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;
using test::lines_of;
using test::run_bankworker;
using test::scratch_database;

namespace {

constexpr std::string_view plaid_token = "access-production-5c7d3f10-9a8b-4c6d-8e2f-0a1b2c3d4e5f";

struct cli_fixture {
  scratch_database database;
  test::root_key_file root_key;
  std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                            {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()}};
  std::string all_output;  // every line any command printed, to search for secrets

  test::process_result run(const std::vector<std::string>& args) {
    auto result = run_bankworker(args, env);
    all_output += result.out + result.err;
    return result;
  }
  std::string create_tenant(const std::string& name) {
    const auto result = run({"tenant", "create", "--name", name});
    REQUIRE(result.exit_code == 0);
    return result.out.substr(0, result.out.size() - 1);
  }
  void seal_secrets(const std::string& tenant_text, int count) {
    const core::uuid tenant = *core::uuid::parse(tenant_text);
    auto connections = database.worker_pool();
    auto keys = test::test_key_store();
    keys->prepare(*connections);
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      for (int i = 0; i < count; ++i) {
        keys->seal_secret(tx,
                          {.purpose = crypto::secret_purpose::plaid_access_token,
                           .tenant = tenant,
                           .secret_id = crypto::random_uuid(),
                           .subject_id = "conn-" + std::to_string(i),
                           .environment = "production"},
                          crypto::secret::copy_of(plaid_token), "test");
      }
    });
  }
  void tamper(const std::string& sql) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec("SET LOCAL session_replication_role = replica");
    tx.exec(sql);
    tx.commit();
  }
};

std::string write_file(const std::filesystem::path& path, std::string_view content) {
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

}  // namespace

TEST_CASE("keys rotate, rewrap and status move every secret to the new version and never print it", "[pg][cli][keys]") {
  cli_fixture f;
  const std::string tenant = f.create_tenant("Acme");
  f.seal_secrets(tenant, 3);

  const auto rotated = f.run({"keys", "rotate", "--tenant", tenant});
  REQUIRE(rotated.exit_code == 0);
  CHECK_THAT(rotated.out, Catch::Contains("key version 2 is primary"));

  const auto before = f.run({"--json", "keys", "status", "--tenant", tenant});
  REQUIRE(before.exit_code == 0);
  CHECK_THAT(before.out, Catch::Contains("{\"version\":1,\"state\":\"active\"") &&
                             Catch::Contains("\"secrets\":3}") &&
                             Catch::Contains("{\"version\":2,\"state\":\"primary\""));

  const auto rewrapped = f.run({"--json", "keys", "rewrap", "--batch-rows", "2"});
  REQUIRE(rewrapped.exit_code == 0);
  CHECK_THAT(rewrapped.out, Catch::Contains("\"rewrapped\":3,\"batches\":2,\"remaining\":0,\"retired\":[1]"));

  const auto after = f.run({"keys", "status", "--tenant", tenant});
  REQUIRE(after.exit_code == 0);
  CHECK_THAT(after.out, Catch::Contains("version 1  retired") && Catch::Contains("version 2  primary") &&
                            Catch::Contains("secrets 3"));

  const auto verified = f.run({"audit", "verify", "--tenant", tenant});
  CHECK(verified.exit_code == 0);
  CHECK(f.all_output.find(plaid_token) == std::string::npos);
  CHECK(f.all_output.find("5c7d3f10-9a8b-4c6d-8e2f-0a1b2c3d4e5f") == std::string::npos);
}

TEST_CASE("audit verify passes an honest chain and names the broken row with exit 1", "[pg][cli][audit]") {
  cli_fixture f;
  const std::string tenant = f.create_tenant("Acme");
  f.create_tenant("Other");
  f.seal_secrets(tenant, 2);
  const auto honest = f.run({"audit", "verify"});
  REQUIRE(honest.exit_code == 0);
  CHECK(lines_of(honest.out).size() == 2);
  CHECK_THAT(honest.out, Catch::Contains("tenant " + tenant + ": 3 rows verified"));

  f.tamper("UPDATE bankworker.audit_log SET subject = 'someone-else' WHERE seq = 2 AND tenant_id = '" + tenant + "'");
  const auto broken = f.run({"audit", "verify"});
  CHECK(broken.exit_code == 1);
  REQUIRE(lines_of(broken.err).size() == 1);
  CHECK_THAT(broken.err, Catch::Contains("audit chain of tenant " + tenant + " is broken at row 2"));
  const auto refused = f.run({"audit", "checkpoint", "--tenant", tenant});
  CHECK(refused.exit_code == 1);
}

TEST_CASE("a checkpoint verifies with openssl against the key audit pubkey prints", "[pg][cli][audit]") {
  cli_fixture f;
  const std::string tenant = f.create_tenant("Acme");
  const auto pubkey = f.run({"audit", "pubkey"});
  REQUIRE(pubkey.exit_code == 0);
  const auto checkpoint = f.run({"audit", "checkpoint", "--tenant", tenant});
  REQUIRE(checkpoint.exit_code == 0);
  const std::string& text = checkpoint.out;
  CHECK(text.starts_with("bankworker-audit-checkpoint v1\ntenant " + tenant + "\nsize 1\nhead "));
  const std::size_t signature_at = text.find("signature ");
  REQUIRE(signature_at != std::string::npos);
  const auto signature = crypto::from_base64(text.substr(signature_at + 10, text.size() - signature_at - 11));
  REQUIRE(signature.has_value());

  const std::filesystem::path directory = f.root_key.path().parent_path();
  const std::string pem = write_file(directory / "audit.pem", pubkey.out);
  const std::string body = write_file(directory / "body", text.substr(0, signature_at));
  const std::string sig = write_file(directory / "sig", std::string(signature->begin(), signature->end()));
  const auto good = test::run_process("/usr/bin/openssl",
                                      {"pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in", body,
                                       "-sigfile", sig},
                                      {});
  INFO(good.out << good.err);
  CHECK(good.exit_code == 0);
  // Change the last character of the signed text (before its newline) to a different one.
  const char last = text[signature_at - 2];
  write_file(directory / "body", text.substr(0, signature_at - 2) + (last == '9' ? "8" : "9") + "\n");
  const auto forged = test::run_process("/usr/bin/openssl",
                                        {"pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in", body,
                                         "-sigfile", sig},
                                        {});
  CHECK(forged.exit_code != 0);
}

TEST_CASE("keys destroy needs its confirmation flag, then shreds and keeps the audit trail", "[pg][cli][keys]") {
  cli_fixture f;
  const std::string tenant = f.create_tenant("Leaving Ltd");
  f.seal_secrets(tenant, 2);
  const auto refused = f.run({"keys", "destroy", "--tenant", tenant});
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.err, Catch::Contains("--yes-destroy-all-keys"));

  const auto destroyed = f.run({"--json", "keys", "destroy", "--tenant", tenant, "--yes-destroy-all-keys"});
  REQUIRE(destroyed.exit_code == 0);
  CHECK(destroyed.out == "{\"tenant_id\":\"" + tenant + "\",\"secrets_shredded\":2}\n");
  const auto status = f.run({"keys", "status", "--tenant", tenant});
  CHECK_THAT(status.out, Catch::Contains("version 1  destroyed"));
  CHECK(f.run({"audit", "verify", "--tenant", tenant}).exit_code == 0);
  CHECK(f.run({"keys", "rotate", "--tenant", tenant}).exit_code == 1);
}

TEST_CASE("keys rotate --root moves everything to the new root key, which then works alone", "[pg][cli][keys]") {
  cli_fixture f;
  const std::string tenant = f.create_tenant("Acme");
  f.seal_secrets(tenant, 2);
  const test::root_key_file new_key(test::other_root_key_hex);
  const auto same = f.run({"keys", "rotate", "--root", "--root-key-file", f.root_key.path_text()});
  CHECK(same.exit_code == 2);
  const auto rotated = f.run({"--json", "keys", "rotate", "--root", "--root-key-file", new_key.path_text()});
  REQUIRE(rotated.exit_code == 0);
  CHECK_THAT(rotated.out, Catch::Contains("\"tenants\":1,\"key_versions_rewrapped\":1,\"signing_keys_rewrapped\":1"));

  f.env["BANKWORKER_ROOT_KEY_FILE"] = new_key.path_text();
  CHECK(f.run({"audit", "verify"}).exit_code == 0);
  CHECK(f.run({"keys", "rotate", "--tenant", tenant}).exit_code == 0);
  CHECK(f.run({"keys", "rewrap"}).exit_code == 0);
  // The old key alone no longer unwraps anything.
  f.env["BANKWORKER_ROOT_KEY_FILE"] = f.root_key.path_text();
  const auto stale = f.run({"audit", "verify"});
  CHECK(stale.exit_code == 1);
  CHECK_THAT(stale.err, Catch::Contains("no configured root key has id"));
}

TEST_CASE("a root key file readable by others is refused in one line", "[pg][cli][keys]") {
  cli_fixture f;
  const test::root_key_file loose(test::test_root_key_hex, 0644);
  f.env["BANKWORKER_ROOT_KEY_FILE"] = loose.path_text();
  const auto result = f.run({"tenant", "create", "--name", "Acme"});
  // A configuration error (README "Exit status"): the operator must fix the file; retrying cannot.
  CHECK(result.exit_code == 78);
  REQUIRE(lines_of(result.err).size() == 1);
  CHECK_THAT(result.err, Catch::Contains("readable by others") && !Catch::Contains(std::string(test::test_root_key_hex)));
}

TEST_CASE("keys rotate --root moves every key from the root key file to Vault Transit", "[pg][cli][keys][vault]") {
  cli_fixture f;
  const std::string tenant = f.create_tenant("Acme");
  f.seal_secrets(tenant, 2);
  test::vault_sim vault("hvs.cli-test");
  const std::filesystem::path token_file = f.root_key.path().parent_path() / "vault-token";
  write_file(token_file, "hvs.cli-test\n");
  f.env["BANKWORKER_VAULT_ADDR"] = vault.address();
  f.env["BANKWORKER_VAULT_TOKEN_FILE"] = token_file.string();

  const auto rotated = f.run({"--json", "keys", "rotate", "--root"});
  INFO(rotated.err);
  REQUIRE(rotated.exit_code == 0);
  CHECK_THAT(rotated.out, Catch::Contains("\"root_key_id\":\"vault:transit/bankworker-root\"") &&
                              Catch::Contains("\"key_versions_rewrapped\":1,\"signing_keys_rewrapped\":1"));

  f.env.erase("BANKWORKER_ROOT_KEY_FILE");  // Vault alone from now on
  CHECK(f.run({"audit", "verify"}).exit_code == 0);
  const auto status = f.run({"keys", "status", "--tenant", tenant});
  CHECK_THAT(status.out, Catch::Contains("root vault:transit/bankworker-root  secrets 2"));
  CHECK(f.run({"keys", "rotate", "--tenant", tenant}).exit_code == 0);
  CHECK(f.run({"keys", "rewrap"}).exit_code == 0);
  const auto again = f.run({"keys", "rotate", "--root"});
  CHECK(again.exit_code == 2);  // nothing to rotate to
  CHECK(f.all_output.find("hvs.cli-test") == std::string::npos);
}

TEST_CASE("currencies add declares a currency once, audited in every tenant's chain, and refuses another exponent",
          "[pg][cli][currencies]") {
  cli_fixture f;
  f.create_tenant("Acme");
  f.create_tenant("Other");
  const auto added = f.run({"currencies", "add", "QQQ", "--exponent", "4", "--json"});
  INFO(added.err);
  REQUIRE(added.exit_code == 0);
  CHECK(added.out == "{\"code\":\"QQQ\",\"exponent\":4,\"declared\":true,\"syncs_requested\":0}\n");
  const auto admin = f.database.connect_as_admin();
  {
    pqxx::work tx(*admin);
    CHECK(tx.exec1("SELECT exponent FROM bankworker.currencies WHERE code = 'QQQ' AND NOT iso")[0].as<int>() == 4);
    CHECK(tx.exec1("SELECT count(DISTINCT tenant_id) FROM bankworker.audit_log WHERE action = 'currency.declared'"
                   " AND subject = 'currency:QQQ'")[0].as<int>() == 2);
  }
  CHECK(f.run({"audit", "verify"}).exit_code == 0);

  // Again with the same exponent: a no-op, not audited twice. Another exponent: refused in one line.
  const auto again = f.run({"currencies", "add", "QQQ", "--exponent", "4"});
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("was declared already"));
  const auto changed = f.run({"currencies", "add", "QQQ", "--exponent", "2"});
  CHECK(changed.exit_code == 1);
  CHECK(lines_of(changed.err).size() == 1);
  CHECK_THAT(changed.err, Catch::Contains("exponent never changes"));
  // Bad input is a usage error before the database is asked.
  CHECK(f.run({"currencies", "add", "QQQ"}).exit_code == 2);
  CHECK(f.run({"currencies", "add", "QQQ", "--exponent", "19"}).exit_code == 2);
  CHECK(f.run({"currencies", "add", "q!", "--exponent", "2"}).exit_code == 1);
  pqxx::work tx(*admin);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.audit_log WHERE action = 'currency.declared'")[0].as<int>() == 2);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.currencies WHERE code = 'Q!'")[0].as<int>() == 0);
}
