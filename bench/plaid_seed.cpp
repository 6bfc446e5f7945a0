#include "bench/plaid_seed.hpp"

#include <optional>
#include <stdexcept>
#include <thread>

#include <curl/curl.h>
#include <simdjson.h>

#include "bench/bench_support.hpp"
#include "connectors/plaid/store.hpp"
#include "crypto/random.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"

namespace bankworker::bench {

namespace {

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

struct sim_item {
  std::string item_id;
  std::string access_token;
};

std::vector<sim_item> list_items(const std::string& sim_url) {
  std::vector<sim_item> items;
  simdjson::dom::parser parser;
  const std::string body = sim_post(sim_url + "/sim/items", "{}");
  for (simdjson::dom::element item : parser.parse(body)["items"].get_array()) {
    items.push_back(
        {std::string(item["item_id"].get_string().value()), std::string(item["access_token"].get_string().value())});
  }
  return items;
}

}  // namespace

std::string sim_post(const std::string& url, const std::string& body) {
  CURL* curl = curl_easy_init();
  std::string answer;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 120'000L);
  const CURLcode code = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  if (code != CURLE_OK) throw std::runtime_error(std::string("simulator call failed: ") + curl_easy_strerror(code));
  return answer;
}

std::vector<linked_connection> link_sim_items(db::pool& connections, db::key_store& keys, const std::string& sim_url,
                                              std::size_t tenants) {
  std::vector<core::uuid> tenant_ids;
  for (std::size_t t = 0; t < tenants; ++t) {
    tenant_ids.push_back(ledger::create_tenant(connections, keys, "Bench tenant " + std::to_string(t), "bench"));
  }
  const std::vector<sim_item> items = list_items(sim_url);
  std::vector<linked_connection> linked;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const core::uuid tenant = tenant_ids[i % tenant_ids.size()];
    const core::uuid connection = crypto::random_uuid();
    db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
      plaid::insert_plaid_connection(tx, tenant,
                                     {.connection = connection,
                                      .environment = "sandbox",
                                      .item_id = items[i].item_id,
                                      .institution_id = std::nullopt,
                                      .linked_by_job = 0,
                                      .first_periodic_sync_in = std::chrono::seconds(6 * 3600)});
      keys.seal_secret(tx,
                       {.purpose = crypto::secret_purpose::plaid_access_token,
                        .tenant = tenant,
                        .secret_id = crypto::random_uuid(),
                        .subject_id = connection.to_string(),
                        .environment = "sandbox"},
                       crypto::secret::copy_of(items[i].access_token), "bench");
    });
    linked.push_back({tenant, connection});
  }
  return linked;
}

void enqueue_syncs(db::pool& connections, const std::vector<linked_connection>& linked) {
  for (const auto& [tenant, connection] : linked) {
    db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
      tx.exec_params("SELECT bankworker.enqueue_sync_request($1::uuid, $2::uuid)", tenant.to_string(),
                     connection.to_string());
    });
  }
}

bool wait_until_synced(pqxx::connection& admin, long expected, std::chrono::steady_clock::duration limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (count_of(admin, "SELECT count(*) FROM bankworker.connections WHERE last_synced_at IS NOT NULL") < expected) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace bankworker::bench
