// Envelope encryption, rewrap and audit append throughput.
//
//   seal/open: one Plaid access token sealed and opened with the tenant key in memory, one core.
//   rewrap:    `keys rewrap` of N secrets against PostgreSQL (BANKWORKER_DATABASE_URL, the private
//              cluster under `make bench`), in batches of 500 rows.
//   audit:     audit rows appended per second, one per transaction (each a commit) and 100 per
//              transaction.
// The database part runs in a throwaway database created next to the one in the URL and dropped
// afterwards. The last line is one JSON object.
#include <sodium.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <pqxx/pqxx>

#include "crypto/envelope.hpp"
#include "crypto/random.hpp"
#include "crypto/root_key.hpp"
#include "db/audit.hpp"
#include "db/keys.hpp"
#include "db/migrate.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "bench/bench_support.hpp"

using namespace bankworker;

using bench::seconds_since;
using bench::with_database;

namespace {

constexpr std::string_view token = "access-production-8ab976e6-64bc-4b38-98f7-731e7a349970";

crypto::secret_context context_for(const core::uuid& tenant, const core::uuid& secret_id) {
  return {.purpose = crypto::secret_purpose::plaid_access_token,
          .tenant = tenant,
          .secret_id = secret_id,
          .subject_id = secret_id.to_string(),
          .environment = "production"};
}

}  // namespace

int main() {
  if (sodium_init() < 0) return 1;

  // --- seal and open, pure crypto -------------------------------------------------------------
  const crypto::secret kek = crypto::secret::random(crypto::key_bytes);
  const crypto::secret_context context = context_for(crypto::random_uuid(), crypto::random_uuid());
  const long crypto_iterations = 200'000;
  auto start = std::chrono::steady_clock::now();
  crypto::sealed_envelope sealed;
  for (long i = 0; i < crypto_iterations; ++i) sealed = crypto::seal_envelope(kek, 1, context, token);
  const double seals_per_s = crypto_iterations / seconds_since(start);
  std::size_t opened_bytes = 0;
  start = std::chrono::steady_clock::now();
  for (long i = 0; i < crypto_iterations; ++i) {
    const crypto::envelope_view view = crypto::parse_envelope(sealed.envelope, context.tenant);
    opened_bytes += crypto::open_envelope(kek, context, view).size();
  }
  const double opens_per_s = crypto_iterations / seconds_since(start);
  std::printf("seal: %.0f/s, open: %.0f/s (Plaid token, %zu-byte envelope, one core, %zu bytes opened)\n", seals_per_s,
              opens_per_s, sealed.envelope.size(), opened_bytes);

  // For scale: the bare AEAD on the same token, without guarded memory, key wrapping or
  // commitment. The difference is what keeping every key in sodium_malloc pages costs.
  {
    std::array<unsigned char, 32> key{};
    std::array<unsigned char, 24> nonce{};
    std::array<unsigned char, 128> out{};
    randombytes_buf(key.data(), key.size());
    unsigned long long written = 0;
    start = std::chrono::steady_clock::now();
    for (long i = 0; i < crypto_iterations; ++i) {
      randombytes_buf(nonce.data(), nonce.size());
      crypto_aead_xchacha20poly1305_ietf_encrypt(out.data(), &written, reinterpret_cast<const unsigned char*>(token.data()),
                                                 token.size(), nullptr, 0, nullptr, nonce.data(), key.data());
    }
    std::printf("bare XChaCha20-Poly1305 seal of the same token (no key handling): %.0f/s\n",
                crypto_iterations / seconds_since(start));
    sodium_memzero(key.data(), key.size());
  }

  // --- against PostgreSQL ---------------------------------------------------------------------
  const char* url = std::getenv("BANKWORKER_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    std::printf("BANKWORKER_DATABASE_URL not set: skipping rewrap and audit figures\n");
    std::printf("{\"bench\":\"crypto\",\"seal_per_s\":%.0f,\"open_per_s\":%.0f}\n", seals_per_s, opens_per_s);
    return 0;
  }
  const std::string database = "bw_crypto_bench_" + std::to_string(::getpid());
  {
    pqxx::connection admin(url);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + tx.quote_name(database));
  }
  const std::string bench_url = with_database(url, database);
  double rewrap_rows_per_s = 0;
  double audit_single_per_s = 0;
  double audit_batched_per_s = 0;
  const long secrets = 20'000;
  try {
    {
      pqxx::connection owner(bench_url);
      db::apply_migrations(owner, db::embedded_migrations());
    }
    db::pool_settings pool_config;
    pool_config.connections = 2;
    db::pool connections(crypto::secret::copy_of(bench_url), pool_config);
    db::key_store keys(crypto::root_key_ring(std::make_unique<crypto::file_root_key>(crypto::secret::random(32))));
    const core::uuid tenant = ledger::create_tenant(connections, keys, "Bench Ltd", "bench");
    for (long chunk = 0; chunk < secrets / 1000; ++chunk) {
      db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
        for (int i = 0; i < 1000; ++i) {
          keys.seal_secret(tx, context_for(tenant, crypto::random_uuid()), crypto::secret::copy_of(token), "bench");
        }
      });
    }
    db::with_tenant(connections, tenant, [&](pqxx::work& tx) { keys.rotate_tenant_key(tx, tenant, "bench"); });
    start = std::chrono::steady_clock::now();
    const db::rewrap_report report = keys.rewrap_tenant(connections, tenant, "bench", 500);
    const double rewrap_s = seconds_since(start);
    rewrap_rows_per_s = static_cast<double>(report.rewrapped) / rewrap_s;
    std::printf("rewrap: %zu rows in %zu batches of 500 in %.2f s = %.0f rows/s (remaining %zu)\n", report.rewrapped,
                report.batches, rewrap_s, rewrap_rows_per_s, report.remaining);

    const long single = 2'000;
    start = std::chrono::steady_clock::now();
    for (long i = 0; i < single; ++i) {
      db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
        db::append_audit(tx, keys, {.tenant = tenant, .actor = "bench", .action = "bench.event", .subject = "x"});
      });
    }
    audit_single_per_s = single / seconds_since(start);
    const long batches = 100;
    start = std::chrono::steady_clock::now();
    for (long b = 0; b < batches; ++b) {
      db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
        for (int i = 0; i < 100; ++i) {
          db::append_audit(tx, keys, {.tenant = tenant, .actor = "bench", .action = "bench.event", .subject = "x"});
        }
      });
    }
    audit_batched_per_s = batches * 100 / seconds_since(start);
    std::printf("audit append: %.0f rows/s one per transaction, %.0f rows/s 100 per transaction\n", audit_single_per_s,
                audit_batched_per_s);
    const auto verified_start = std::chrono::steady_clock::now();
    const auto verified = db::verify_audit_chain(connections, keys, tenant);
    std::printf("audit verify: %lld rows in %.2f s, %s\n", static_cast<long long>(verified.rows),
                seconds_since(verified_start), verified.broken ? "BROKEN" : "ok");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "crypto_bench: %s\n", error.what());
  }
  {
    pqxx::connection admin(url);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(database) + " WITH (FORCE)");
  }
  std::printf(
      "{\"bench\":\"crypto\",\"seal_per_s\":%.0f,\"open_per_s\":%.0f,\"rewrap_rows_per_s\":%.0f,"
      "\"audit_append_per_s\":%.0f,\"audit_append_batched_per_s\":%.0f}\n",
      seals_per_s, opens_per_s, rewrap_rows_per_s, audit_single_per_s, audit_batched_per_s);
  return rewrap_rows_per_s > 0 ? 0 : 1;
}
