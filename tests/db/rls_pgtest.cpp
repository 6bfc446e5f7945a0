// Row-level security over every tenant table, found from the catalogue: a table added later
// without RLS, without a policy, without tenant_id leading its key, or without a fixture here
// fails this test.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include <pqxx/pqxx>

#include "tests/support/scope_token.hpp"
#include "tests/support/scratch_database.hpp"

using bankworker::test::scratch_database;

namespace {

// Tables in the schema that are not tenant data, and why.
const std::set<std::string> shared_tables = {
    "schema_migrations",  // migration bookkeeping
    "currencies",         // ISO 4217 reference data
    // Verified Connect events for an account no tenant has claimed yet: no tenant is known.
    // Never readable by bankworker_app (checked below).
    "stripe_unrouted_events",
    "audit_signing_keys", // one Ed25519 key signs every tenant's chain; its seed is wrapped by the root key
    "schedules",          // periodic maintenance tasks, claimed by one process per interval
    "rate_buckets",       // provider rate limits shared by all processes; keys name limits, never secrets
    "scope_keys",         // the app's scope-token keys: owner-only, checked below to be unreadable
    // The operator console's accounts (argon2id hashes) and sessions (hashes of their cookies):
    // operators work across tenants; their reads are audited in each tenant's chain instead.
    "operators",
    "operator_sessions",
    // The `bankworker run` processes and their heartbeats (0042): hosts and pids, no tenant's data;
    // the worker reaches it only through functions (tests/queue/worker_processes_pgtest.cpp).
    "worker_processes",
};

// One journal entry of the tenant ($1), its id md5(tenant || suffix), with two balanced lines.
std::string entry_with_lines_sql(const std::string& suffix, const std::string& key) {
  return "WITH e AS (INSERT INTO bankworker.journal_entries (tenant_id, entry_id, idempotency_key, description, occurred_at)"
         " VALUES ($1::text::uuid, md5($1::text || '" + suffix + "')::uuid, '" + key + "', 'Charge', now())"
         " RETURNING tenant_id, entry_id)"
         " INSERT INTO bankworker.journal_lines (tenant_id, entry_id, line_no, account_code, amount_minor, currency)"
         " SELECT e.tenant_id, e.entry_id, l.n, l.a, l.m, 'USD' FROM e"
         " CROSS JOIN (VALUES (0, 'stripe.clearing', 1000), (1, 'revenue', -1000)) AS l(n, a, m)";
}

// One row per tenant for every tenant table, inserted as the cluster admin (who bypasses RLS).
// $1 is the tenant id as text. Order matters: foreign keys.
const std::vector<std::pair<std::string, std::vector<std::string>>> fixtures = {
    {"tenants", {"INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1::text::uuid, 'fixture ' || $1::text)"}},
    {"connections",
     {"INSERT INTO bankworker.connections (tenant_id, connection_id, environment, item_id, status)"
      " VALUES ($1::text::uuid, md5($1::text || 'c')::uuid, 'sandbox', 'item-' || $1::text, 'active')"}},
    {"tenant_keys",
     {"INSERT INTO bankworker.tenant_keys (tenant_id, version, state, root_key_id, wrapped_key)"
      " VALUES ($1::text::uuid, 1, 'primary', 'file:0000000000000000', '\\x00'::bytea)"}},
    {"sealed_secrets",
     {"INSERT INTO bankworker.sealed_secrets (tenant_id, secret_id, purpose, subject_id, kek_version,"
      " wrapped_data_key, envelope) VALUES ($1::text::uuid, md5($1::text || 's')::uuid, 'plaid.access_token',"
      " md5($1::text || 'c'), 1, '\\x00'::bytea, '\\x01'::bytea)"}},
    {"secret_shred_keys",
     {"INSERT INTO bankworker.secret_shred_keys (tenant_id, secret_id, shred_key)"
      " VALUES ($1::text::uuid, md5($1::text || 's')::uuid, decode(md5($1::text) || md5($1::text), 'hex'))"}},
    {"accounts",
     {"INSERT INTO bankworker.accounts (tenant_id, account_id, connection_id, name, type, currency)"
      " VALUES ($1::text::uuid, 'acc-' || $1::text, md5($1::text || 'c')::uuid, 'Checking', 'depository', 'USD')"}},
    {"transactions",
     {"INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
      " currency, date, name, pending) VALUES ($1::text::uuid, 'txn-' || $1::text, 'acc-' || $1::text,"
      " md5($1::text || 'c')::uuid, -1234, 'USD', DATE '2026-11-01', 'Coffee', false)"}},
    {"plaid_quarantine",
     {"INSERT INTO bankworker.plaid_quarantine (tenant_id, connection_id, kind, plaid_id, reason, currency, detail, raw)"
      " VALUES ($1::text::uuid, md5($1::text || 'c')::uuid, 'transaction', 'txq-' || $1::text, 'unknown_currency',"
      " 'ZZZ', 'unknown currency', '{}')"}},
    {"stripe_events",
     {"INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, livemode, created_at, body)"
      " VALUES ($1::text::uuid, 'evt_' || md5($1::text), 'charge.succeeded', false, now(), '{}'::jsonb)"}},
    {"ledger_accounts",
     {"INSERT INTO bankworker.ledger_accounts (tenant_id, code, name, kind) VALUES"
      " ($1::text::uuid, 'stripe.clearing', 'Stripe clearing', 'asset'),"
      " ($1::text::uuid, 'revenue', 'Revenue', 'revenue')"}},
    // An entry's lines come in its own statement (migration 0049): each of these two is an entry
    // with its lines.
    {"journal_entries", {entry_with_lines_sql("e", "ch_1:gross")}},
    {"journal_lines", {entry_with_lines_sql("e2", "ch_2:gross")}},
    {"reconcile_accounts",
     {"INSERT INTO bankworker.reconcile_accounts (tenant_id, plaid_account_id, ledger_account)"
      " VALUES ($1::text::uuid, 'acc-' || $1::text, 'stripe.clearing')"}},
    {"reconcile_payouts",
     {"INSERT INTO bankworker.reconcile_payouts (tenant_id, payout_id, entry_id, ledger_account, amount_minor,"
      " currency, expected_on) VALUES ($1::text::uuid, 'po_' || md5($1::text), md5($1::text || 'e')::uuid,"
      " 'stripe.clearing', 1000, 'USD', DATE '2026-11-01')"}},
    {"audit_log",
     {"INSERT INTO bankworker.audit_log (tenant_id, seq, actor, action, subject, prev_hash, hash, signature,"
      " signing_key_id) VALUES ($1::text::uuid, 1, 'test', 'tenant.created', $1::text, '\\x00', '\\x01', '\\x02', 'k1')"}},
    {"stripe_accounts",
     {"INSERT INTO bankworker.stripe_accounts (tenant_id, account)"
      " VALUES ($1::text::uuid, 'acct_' || substr(md5($1::text), 1, 16))"}},
    {"stripe_event_cursors",
     {"INSERT INTO bankworker.stripe_event_cursors (tenant_id, scope, last_event_id)"
      " VALUES ($1::text::uuid, 'tenant', 'evt_' || substr(md5($1::text), 1, 16))"}},
    {"audit_heads",
     {"INSERT INTO bankworker.audit_heads (tenant_id, seq, hash)"
      " VALUES ($1::text::uuid, 1, decode(repeat('00', 32), 'hex'))"}},
    {"jobs",
     {"INSERT INTO bankworker.jobs (tenant_id, kind, payload, unique_key, connection_id)"
      " VALUES ($1::text::uuid, 'plaid.sync', '{}'::jsonb, 'plaid.sync:' || md5($1::text || 'c'),"
      " md5($1::text || 'c')::uuid)"}},
    {"job_attempts",
     {"INSERT INTO bankworker.job_attempts (tenant_id, job_id, attempt, outcome, error, finished_at)"
      " VALUES ($1::text::uuid, 1, 1, 'retry', 'fixture', now())"}},
    {"external_calls",
     {"INSERT INTO bankworker.external_calls (tenant_id, provider, endpoint, http_status, bytes_sent,"
      " bytes_received, latency_us) VALUES ($1::text::uuid, 'plaid', '/transactions/sync', 200, 10, 20, 30)"}},
};

struct tenant_table {
  std::string name;
  bool rls_enabled;
  bool rls_forced;
  bool has_policy;
  std::string first_key_column;
};

std::vector<tenant_table> tenant_tables(pqxx::connection& admin, std::vector<std::string>& untenanted) {
  pqxx::work tx(admin);
  std::vector<tenant_table> tables;
  const auto rows = tx.exec(R"sql(
    SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
           EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid),
           coalesce((SELECT a.attname FROM pg_index i
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                      WHERE i.indrelid = c.oid AND i.indisprimary), ''),
           EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'bankworker' AND c.relkind IN ('r', 'p')
     ORDER BY c.relname)sql");
  for (const auto& row : rows) {
    const std::string name = row[0].as<std::string>();
    if (!row[5].as<bool>()) {
      untenanted.push_back(name);
      continue;
    }
    tables.push_back({name, row[1].as<bool>(), row[2].as<bool>(), row[3].as<bool>(), row[4].as<std::string>()});
  }
  return tables;
}

void insert_fixtures(pqxx::connection& admin, const std::string& tenant) {
  pqxx::work tx(admin);
  for (const auto& [table, statements] : fixtures) {
    for (const auto& sql : statements) tx.exec_params(sql, tenant);
  }
  tx.commit();
}

// Content fingerprint of one tenant's rows in a table, read as admin.
std::string fingerprint(pqxx::connection& admin, const std::string& table, const std::string& tenant) {
  pqxx::work tx(admin);
  const auto row = tx.exec_params1("SELECT count(*) || ':' || coalesce(md5(string_agg(to_jsonb(t)::text, ',' ORDER BY "
                                   "to_jsonb(t)::text)), '') FROM bankworker." + tx.quote_name(table) +
                                       " t WHERE tenant_id = $1::text::uuid",
                                   tenant);
  return row[0].as<std::string>();
}

std::string row_json(pqxx::connection& admin, const std::string& table, const std::string& tenant) {
  pqxx::work tx(admin);
  return tx.exec_params1("SELECT to_jsonb(t)::text FROM bankworker." + tx.quote_name(table) +
                             " t WHERE tenant_id = $1::text::uuid LIMIT 1",
                         tenant)[0]
      .as<std::string>();
}

// Runs `sql` in its own transaction as `role` with `tenant` (or none) set. Returns the rows
// affected, or the error message.
struct outcome {
  bool failed = false;
  std::string message;
  long affected = 0;
  long first_value = 0;
};

// Runs `sql` in one transaction on `connection` after `scope` has scoped it.
template <class Scope>
outcome run_scoped(pqxx::connection& connection, Scope scope, const std::string& sql, const std::string& parameter) {
  outcome result;
  try {
    pqxx::work tx(connection);
    scope(tx);
    const pqxx::result rows = parameter.empty() ? tx.exec(sql) : tx.exec_params(sql, parameter);
    result.affected = static_cast<long>(rows.affected_rows());
    if (!rows.empty() && rows.columns() > 0 && !rows[0][0].is_null()) result.first_value = rows[0][0].as<long>();
    tx.commit();
  } catch (const pqxx::sql_error& error) {
    result.failed = true;
    result.message = error.what();
  }
  return result;
}

// As `role` (SET LOCAL ROLE), scoped to `tenant` by the worker's own setting.
outcome run_as(pqxx::connection& connection, const std::string& role, const std::string& tenant,
               const std::string& sql, const std::string& parameter = {}) {
  return run_scoped(
      connection,
      [&](pqxx::work& tx) {
        tx.exec_params("SELECT set_config('role', $1, true)", role);
        if (!tenant.empty()) tx.exec_params("SELECT set_config('bankworker.tenant_id', $1, true)", tenant);
      },
      sql, parameter);
}

// As the customer's app: the transaction opens with a scope token, then runs `sql`.
outcome run_as_app(pqxx::connection& app, const std::string& token, const std::string& sql,
                   const std::string& parameter = {}) {
  return run_scoped(
      app, [&](pqxx::work& tx) { tx.exec_params("SELECT bankworker.enter_tenant($1)", token); }, sql, parameter);
}

bool has_privilege(pqxx::connection& admin, const std::string& role, const std::string& table, const char* privilege) {
  pqxx::work tx(admin);
  return tx.exec_params1("SELECT has_table_privilege($1, $2, $3)", role, "bankworker." + table, std::string(privilege))[0]
      .as<bool>();
}

// Two tenants with one fixture row in every tenant table each, in a scratch database.
struct two_tenants {
  const scratch_database database;
  const std::unique_ptr<pqxx::connection> admin = database.connect_as_admin();
  const std::string tenant_a = "aaaaaaaa-0000-4000-8000-000000000001";
  const std::string tenant_b = "bbbbbbbb-0000-4000-8000-000000000002";
  two_tenants() {
    insert_fixtures(*admin, tenant_a);
    insert_fixtures(*admin, tenant_b);
  }
};

}  // namespace

TEST_CASE_METHOD(two_tenants, "every tenant table isolates tenants under forced row-level security", "[pg][rls]") {

  std::vector<std::string> untenanted;
  const auto tables = tenant_tables(*admin, untenanted);
  for (const auto& name : untenanted) {
    INFO("table bankworker." << name << " has no tenant_id column; only reference tables may lack one");
    CHECK(shared_tables.contains(name));
  }
  REQUIRE(tables.size() >= fixtures.size());

  pqxx::connection worker(database.url());
  const std::string role = "bankworker_worker";
  for (const auto& table : tables) {
    DYNAMIC_SECTION("table " << table.name) {
      INFO("table bankworker." << table.name);
      CHECK(table.rls_enabled);
      CHECK(table.rls_forced);
      CHECK(table.has_policy);
      CHECK(table.first_key_column == "tenant_id");
      const bool has_fixture = std::any_of(fixtures.begin(), fixtures.end(),
                                           [&](const auto& fixture) { return fixture.first == table.name; });
      INFO("add a fixture row for this table to tests/db/rls_pgtest.cpp");
      REQUIRE(has_fixture);

      const std::string quoted = "bankworker." + worker.quote_name(table.name);
      const std::string count_sql = "SELECT count(*) FROM " + quoted;
      const std::string insert_sql =
          "INSERT INTO " + quoted + " SELECT * FROM jsonb_populate_record(NULL::" + quoted + ", $1::jsonb)";
      const std::string row_a = row_json(*admin, table.name, tenant_a);
      const std::string row_b = row_json(*admin, table.name, tenant_b);
      const std::string before_b = fingerprint(*admin, table.name, tenant_b);
      const std::string before_a = fingerprint(*admin, table.name, tenant_a);

      if (!has_privilege(*admin, role, table.name, "SELECT")) {
        // The worker reaches this table only through SECURITY DEFINER functions (job_attempts):
        // every direct read or write of it is refused outright, whatever the tenant scope.
        for (const std::string& sql : {count_sql, "DELETE FROM " + quoted, "UPDATE " + quoted + " SET tenant_id = tenant_id"}) {
          const outcome refused = run_as(worker, role, tenant_a, sql);
          CHECK(refused.failed);
          CHECK_THAT(refused.message, Catch::Contains("permission denied"));
        }
        const outcome insert_b = run_as(worker, role, tenant_a, "INSERT INTO " + quoted + " (tenant_id) VALUES ($1::text::uuid)",
                                        tenant_b);
        CHECK(insert_b.failed);
        CHECK_THAT(insert_b.message, Catch::Contains("permission denied"));
        CHECK(fingerprint(*admin, table.name, tenant_b) == before_b);
        CHECK(fingerprint(*admin, table.name, tenant_a) == before_a);
        continue;
      }

      // No tenant set: nothing visible, nothing insertable.
      const outcome no_tenant_count = run_as(worker, role, "", count_sql);
      REQUIRE_FALSE(no_tenant_count.failed);
      CHECK(no_tenant_count.first_value == 0);
      const outcome no_tenant_insert = run_as(worker, role, "", insert_sql, row_a);
      CHECK(no_tenant_insert.failed);
      CHECK_THAT(no_tenant_insert.message, Catch::Contains("row-level security"));

      // Tenant A set: A's rows visible, B's invisible and untouchable.
      const outcome a_count = run_as(worker, role, tenant_a, count_sql);
      CHECK(a_count.first_value > 0);
      const outcome b_seen = run_as(worker, role, tenant_a, count_sql + " WHERE tenant_id = $1::text::uuid", tenant_b);
      CHECK(b_seen.first_value == 0);

      const outcome insert_b = run_as(worker, role, tenant_a, insert_sql, row_b);
      CHECK(insert_b.failed);
      CHECK_THAT(insert_b.message, Catch::Contains("row-level security"));

      const outcome update_b =
          run_as(worker, role, tenant_a, "UPDATE " + quoted + " SET tenant_id = tenant_id WHERE tenant_id = $1::text::uuid",
                 tenant_b);
      CHECK((update_b.failed || update_b.affected == 0));
      const outcome delete_b = run_as(worker, role, tenant_a, "DELETE FROM " + quoted + " WHERE tenant_id = $1::text::uuid",
                                      tenant_b);
      CHECK((delete_b.failed || delete_b.affected == 0));

      // Moving A's own rows to B is refused too.
      const outcome move_a = run_as(worker, role, tenant_a, "UPDATE " + quoted + " SET tenant_id = $1::text::uuid", tenant_b);
      CHECK(move_a.failed);
      if (has_privilege(*admin, role, table.name, "UPDATE")) {
        CHECK_THAT(move_a.message, Catch::Contains("row-level security"));
      }

      CHECK(fingerprint(*admin, table.name, tenant_b) == before_b);
      CHECK(fingerprint(*admin, table.name, tenant_a) == before_a);
    }
  }
}

TEST_CASE_METHOD(two_tenants, "bankworker_app reads only its tenant's bank data and ledger, and never sealed secrets", "[pg][rls]") {
  const bankworker::test::scope_key key = bankworker::test::scope_key::random("rls");
  {
    pqxx::work tx(*admin);
    bankworker::test::add_scope_key(tx, key);
    tx.commit();
  }
  pqxx::connection app(database.app_url());
  const std::string token_a = bankworker::test::mint_scope_token(key, tenant_a, bankworker::test::unix_now() + 300);

  const outcome secrets = run_as_app(app, token_a, "SELECT count(*) FROM bankworker.sealed_secrets");
  CHECK(secrets.failed);
  CHECK_THAT(secrets.message, Catch::Contains("permission denied"));

  for (const char* table : {"transactions", "accounts", "ledger_accounts", "journal_entries", "journal_lines"}) {
    INFO(table);
    const outcome mine = run_as_app(app, token_a, std::string("SELECT count(*) FROM bankworker.") + table);
    REQUIRE_FALSE(mine.failed);
    CHECK(mine.first_value > 0);
    const outcome theirs = run_as_app(app, token_a,
                                      std::string("SELECT count(*) FROM bankworker.") + table +
                                          " WHERE tenant_id = $1::text::uuid",
                                      tenant_b);
    CHECK(theirs.first_value == 0);
    const outcome write = run_as_app(app, token_a, std::string("DELETE FROM bankworker.") + table);
    CHECK(write.failed);
  }
  for (const char* table : {"tenants", "connections", "audit_log", "external_calls", "stripe_events",
                            "stripe_accounts", "stripe_event_cursors", "stripe_unrouted_events", "tenant_keys", "audit_heads",
                            "audit_signing_keys", "scope_keys", "operators", "operator_sessions",
                            "worker_processes"}) {
    INFO(table);
    const outcome read = run_as_app(app, token_a, std::string("SELECT count(*) FROM bankworker.") + table);
    CHECK(read.failed);
    CHECK_THAT(read.message, Catch::Contains("permission denied"));
  }
}

TEST_CASE_METHOD(two_tenants, "the Plaid item lookup reads across tenants only inside its function, and closes the gate after it",
          "[pg][rls]") {
  pqxx::connection worker(database.url());
  const std::string role = "bankworker_worker";
  const std::string item_a = "item-" + tenant_a;

  // From B's scope and from no scope at all (as the webhook route asks), A's item is found...
  for (const std::string& scope : {tenant_b, std::string()}) {
    INFO("tenant scope '" << scope << "'");
    const outcome found = run_as(worker, role, scope,
                                 "SELECT count(*) FROM bankworker.plaid_item_connection($1)"
                                 " WHERE tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001' AND status = 'active'",
                                 item_a);
    REQUIRE_FALSE(found.failed);
    CHECK(found.first_value == 1);
  }
  // ...the gate is closed again once the function returned...
  {
    pqxx::work tx(worker);
    tx.exec_params("SELECT set_config('role', $1, true)", role);
    tx.exec_params("SELECT set_config('bankworker.tenant_id', $1, true)", tenant_b);
    CHECK(tx.exec_params("SELECT count(*) FROM bankworker.plaid_item_connection($1)", item_a)[0][0].as<long>() == 1);
    CHECK(tx.exec1("SELECT current_setting('bankworker.cross_tenant', true)")[0].as<std::string>() == "off");
    CHECK(tx.exec_params1("SELECT count(*) FROM bankworker.connections WHERE tenant_id <> $1::uuid", tenant_b)[0]
              .as<long>() == 0);
  }
  // ...and the runtime role opening it itself sees no other tenant's connection.
  const outcome opened = run_as(worker, role, tenant_b,
                                "SELECT count(*) FROM bankworker.connections, set_config('bankworker.cross_tenant', 'on', true)"
                                " WHERE tenant_id <> 'bbbbbbbb-0000-4000-8000-000000000002'");
  REQUIRE_FALSE(opened.failed);
  CHECK(opened.first_value == 0);
  const outcome unknown = run_as(worker, role, tenant_b, "SELECT count(*) FROM bankworker.plaid_item_connection($1)",
                                 std::string("item-nobody"));
  CHECK(unknown.first_value == 0);
}
