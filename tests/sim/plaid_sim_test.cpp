// The Plaid simulator, end to end: the real plaid_sim binary on a free port, spoken to over HTTP
// with libcurl, every /transactions/sync page read with the connector's own parser, and webhook
// signatures checked with OpenSSL the way a receiver would (independently of the simulator's
// signer).

#include <catch2/catch.hpp>
#include <curl/curl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <simdjson.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "connectors/plaid/sync_page.hpp"

extern char** environ;

namespace {

using bankworker::core::currency_table;
namespace plaid = bankworker::plaid;

constexpr const char* client_id = "bankworker-sim-client";
constexpr const char* secret = "bankworker-sim-secret";

const currency_table currencies({{"USD", 2, true}, {"EUR", 2, true}, {"JPY", 0, true}, {"BHD", 3, true},
                                 {"BTC", 8, false}});

// ---------------------------------------------------------------------------------------------
// The simulator as a child process: started on port 0, its port read from its first line.

class sim_process {
 public:
  explicit sim_process(std::vector<std::string> args) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> storage{PLAID_SIM_BINARY, "--port", "0"};
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec. The simulator dies with this test process, so a
      // crashed test never leaves it holding ctest's output pipe open.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(out[1], 1);
      ::execve(PLAID_SIM_BINARY, argv.data(), environ);
      ::_exit(127);
    }
    ::close(out[1]);
    stdout_ = out[0];
    // Start-up includes generating the data (100 × 1,000 under ASan takes seconds).
    const std::string line = read_line(std::chrono::seconds(120));
    const std::string prefix = "listening on http://127.0.0.1:";
    if (!line.starts_with(prefix)) throw std::runtime_error("unexpected first line from plaid_sim: " + line);
    url_ = "http://127.0.0.1:" + line.substr(prefix.size());
  }

  ~sim_process() {
    if (pid_ > 0) stop();
    if (stdout_ >= 0) ::close(stdout_);
  }

  sim_process(const sim_process&) = delete;
  sim_process& operator=(const sim_process&) = delete;

  const std::string& url() const { return url_; }

  // SIGTERM, then the exit status (-1 when it did not exit on its own within ten seconds).
  int stop() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 1000; ++i) {
      const pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

 private:
  std::string read_line(std::chrono::seconds timeout) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd fd{stdout_, POLLIN, 0};
      if (::poll(&fd, 1, 100) <= 0) continue;
      char c = 0;
      if (::read(stdout_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line += c;
    }
    throw std::runtime_error("plaid_sim printed no first line (so far: '" + line + "')");
  }

  pid_t pid_ = -1;
  int stdout_ = -1;
  std::string url_;
};

// ---------------------------------------------------------------------------------------------
// HTTP with libcurl's easy API (fine in tests: nothing else runs on this thread).

struct http_result {
  CURLcode curl = CURLE_OK;
  long status = 0;
  std::string body;
  std::chrono::milliseconds elapsed{0};
};

std::size_t collect(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// One request on `curl` (a reused handle keeps the connection alive between calls).
http_result post_on(CURL* curl, const std::string& url, const std::string& body,
                    const std::vector<std::string>& headers = {}) {
  http_result result;
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 60'000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);
  const auto start = std::chrono::steady_clock::now();
  result.curl = curl_easy_perform(curl);
  result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(list);
  return result;
}

http_result post(const std::string& url, const std::string& body, const std::vector<std::string>& headers = {}) {
  CURL* curl = curl_easy_init();
  REQUIRE(curl != nullptr);
  http_result result = post_on(curl, url, body, headers);
  curl_easy_cleanup(curl);
  return result;
}

std::string credentials() { return std::string(R"("client_id":")") + client_id + R"(","secret":")" + secret + R"(")"; }

// Reads one JSON document (tests only: a fresh parser each time keeps the elements alive).
struct json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit json(const std::string& text) {
    if (parser.parse(text).get(root) != simdjson::SUCCESS) throw std::runtime_error("not JSON: " + text.substr(0, 200));
  }
  std::string string(std::string_view key) const {
    std::string_view value;
    if (root[key].get_string().get(value) != simdjson::SUCCESS) return "<missing " + std::string(key) + ">";
    return std::string(value);
  }
  bool is_null(std::string_view key) const {
    simdjson::dom::element value;
    return root[key].get(value) == simdjson::SUCCESS && value.is_null();
  }
};

// Checks an answer is Plaid's error object with this code, type and status.
void check_plaid_error(const http_result& r, long status, const std::string& type, const std::string& code) {
  INFO(r.body);
  CHECK(r.status == status);
  const json error(r.body);
  CHECK(error.string("error_type") == type);
  CHECK(error.string("error_code") == code);
  CHECK(!error.string("error_message").empty());
  CHECK(error.string("request_id").size() == 15);
  simdjson::dom::element display;
  CHECK(error.root["display_message"].get(display) == simdjson::SUCCESS);  // present, maybe null
}

// ---------------------------------------------------------------------------------------------
// Plaid flows.

struct linked_item {
  std::string access_token;
  std::string item_id;
  std::string public_token;
};

linked_item link_item(const sim_process& sim) {
  const http_result created = post(sim.url() + "/sandbox/public_token/create",
                                   "{" + credentials() + R"(,"institution_id":"ins_109508","initial_products":["transactions"],"options":{"webhook":")" +
                                       sim.url() + R"(/sim/webhooks/inbox"}})");
  INFO(created.body);
  REQUIRE(created.status == 200);
  linked_item item;
  item.public_token = json(created.body).string("public_token");
  REQUIRE(item.public_token.starts_with("public-sandbox-"));
  const http_result exchanged = post(sim.url() + "/item/public_token/exchange",
                                     "{" + credentials() + R"(,"public_token":")" + item.public_token + R"("})");
  INFO(exchanged.body);
  REQUIRE(exchanged.status == 200);
  const json answer(exchanged.body);
  item.access_token = answer.string("access_token");
  item.item_id = answer.string("item_id");
  REQUIRE(item.access_token.starts_with("access-sandbox-"));
  REQUIRE(item.access_token.size() == std::string("access-sandbox-").size() + 36);
  return item;
}

http_result sync_call(const sim_process& sim, const std::string& access_token, const std::string& cursor, int count) {
  return post(sim.url() + "/transactions/sync", "{" + credentials() + R"(,"access_token":")" + access_token +
                                                    R"(","cursor":")" + cursor + R"(","count":)" + std::to_string(count) + "}");
}

plaid::sync_page parse_page(const std::string& body) {
  simdjson::ondemand::parser parser;
  plaid::page_result parsed = plaid::parse_sync_page(parser, body, currencies);
  INFO(parsed.error);
  REQUIRE(parsed.ok);
  return std::move(parsed.page);
}

struct sync_run {
  std::vector<plaid::sync_page> pages;
  std::string final_cursor;
};

// Walks /transactions/sync from `cursor` until has_more is false, as the worker does.
sync_run sync_all(const sim_process& sim, const std::string& access_token, std::string cursor, int count) {
  sync_run run;
  for (int guard = 0; guard < 10'000; ++guard) {
    const http_result r = sync_call(sim, access_token, cursor, count);
    INFO(r.body.substr(0, 500));
    REQUIRE(r.status == 200);
    run.pages.push_back(parse_page(r.body));
    cursor = run.pages.back().next_cursor;
    if (!run.pages.back().has_more) break;
  }
  run.final_cursor = cursor;
  return run;
}

// The simulator's current truth for an item, read with the same parser as a page.
std::map<std::string, plaid::transaction> truth_of(const sim_process& sim, const std::string& access_token) {
  const http_result r = post(sim.url() + "/sim/transactions/truth", R"({"access_token":")" + access_token + R"("})");
  REQUIRE(r.status == 200);
  const std::string prefix = R"({"transactions":)";
  REQUIRE(r.body.starts_with(prefix));
  const std::string as_page = R"({"added":)" + r.body.substr(prefix.size(), r.body.size() - prefix.size() - 1) +
                              R"(,"modified":[],"removed":[],"next_cursor":"","has_more":false})";
  std::map<std::string, plaid::transaction> truth;
  for (auto& t : parse_page(as_page).added) truth.emplace(t.transaction_id, t);
  return truth;
}

// Applies pages in order, as Plaid documents: upsert added and modified, delete removed.
std::map<std::string, plaid::transaction> replay(const std::vector<plaid::sync_page>& pages) {
  std::map<std::string, plaid::transaction> state;
  for (const auto& page : pages) {
    for (const auto& t : page.added) state[t.transaction_id] = t;
    for (const auto& t : page.modified) state[t.transaction_id] = t;
    for (const auto& r : page.removed) state.erase(r.transaction_id);
  }
  return state;
}

bool same_transaction(const plaid::transaction& a, const plaid::transaction& b) {
  return a.transaction_id == b.transaction_id && a.account_id == b.account_id && a.amount_minor == b.amount_minor &&
         a.currency == b.currency && a.official_currency == b.official_currency && a.date == b.date &&
         a.authorized_date == b.authorized_date && a.name == b.name && a.merchant_name == b.merchant_name &&
         a.payment_channel == b.payment_channel && a.category_primary == b.category_primary &&
         a.category_detailed == b.category_detailed && a.pending == b.pending &&
         a.pending_transaction_id == b.pending_transaction_id;
}

http_result control(const sim_process& sim, const std::string& path, const std::string& body) {
  return post(sim.url() + path, body);
}

std::string arm_fault(const sim_process& sim, const std::string& body) {
  const http_result r = control(sim, "/sim/faults", body);
  INFO(r.body);
  REQUIRE(r.status == 200);
  return r.body;
}

// ---------------------------------------------------------------------------------------------
// Webhook verification, as a receiver does it (our own code, not the simulator's).

std::string base64url_decode(std::string_view text) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    else throw std::runtime_error("not base64url");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  std::string out;
  char hex[3];
  for (unsigned char b : digest) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    out += hex;
  }
  return out;
}

struct jwt_parts {
  std::string header;
  std::string payload;
  std::string signing_input;
  std::string signature;
};

jwt_parts split_jwt(const std::string& token) {
  const std::size_t first = token.find('.');
  const std::size_t second = token.find('.', first + 1);
  REQUIRE(first != std::string::npos);
  REQUIRE(second != std::string::npos);
  return jwt_parts{base64url_decode(std::string_view(token).substr(0, first)),
                   base64url_decode(std::string_view(token).substr(first + 1, second - first - 1)),
                   token.substr(0, second), base64url_decode(std::string_view(token).substr(second + 1))};
}

// ES256 check of a JWS against a P-256 JWK (x, y base64url): raw r‖s rewritten as DER for OpenSSL.
bool verify_es256(const std::string& jwk_text, const jwt_parts& jwt) {
  const json jwk(jwk_text);
  const std::string point = std::string(1, '\x04') + base64url_decode(jwk.string("x")) + base64url_decode(jwk.string("y"));
  if (point.size() != 65 || jwt.signature.size() != 64) return false;
  OSSL_PARAM_BLD* build = OSSL_PARAM_BLD_new();
  OSSL_PARAM_BLD_push_utf8_string(build, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
  OSSL_PARAM_BLD_push_octet_string(build, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(build);
  EVP_PKEY_CTX* from = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
  EVP_PKEY* key = nullptr;
  const bool built = EVP_PKEY_fromdata_init(from) == 1 && EVP_PKEY_fromdata(from, &key, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(from);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(build);
  if (!built) return false;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  const auto* raw = reinterpret_cast<const unsigned char*>(jwt.signature.data());
  ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, nullptr), BN_bin2bn(raw + 32, 32, nullptr));
  unsigned char* der = nullptr;
  const int der_size = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool ok = der_size > 0 && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
                  EVP_DigestVerify(ctx, der, static_cast<std::size_t>(der_size),
                                   reinterpret_cast<const unsigned char*>(jwt.signing_input.data()),
                                   jwt.signing_input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  EVP_PKEY_free(key);
  return ok;
}

struct sent_webhook {
  std::string body;
  std::string verification;
};

// Has the simulator sign and POST a webhook to its own inbox, then reads what arrived there.
sent_webhook send_webhook(const sim_process& sim, const linked_item& item, const std::string& options) {
  const http_result sent = control(sim, "/sim/webhooks/send",
                                   R"({"access_token":")" + item.access_token + R"(")" + options + "}");
  INFO(sent.body);
  REQUIRE(sent.status == 200);
  const json answer(sent.body);
  simdjson::dom::element delivered;
  REQUIRE(answer.root["delivered"].get(delivered) == simdjson::SUCCESS);
  REQUIRE(delivered.get_bool().value());
  const http_result inbox = control(sim, "/sim/webhooks/received", "{}");
  REQUIRE(inbox.status == 200);
  const json received(inbox.body);
  simdjson::dom::array list = received.root["webhooks"].get_array().value();
  REQUIRE(list.size() > 0);
  simdjson::dom::element last;
  for (auto w : list) last = w;
  return sent_webhook{std::string(last["body"].get_string().value()),
                      std::string(last["plaid_verification"].get_string().value())};
}

std::string jwk_for(const sim_process& sim, const std::string& kid) {
  const http_result r = post(sim.url() + "/webhook_verification_key/get",
                             "{" + credentials() + R"(,"key_id":")" + kid + R"("})");
  if (r.status != 200) return {};
  const json answer(r.body);
  return std::string(simdjson::to_string(answer.root["key"]));
}

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

// =============================================================================================

TEST_CASE("exchange then a full sync over several pages reproduces every generated transaction exactly once",
          "[plaid_sim]") {
  sim_process sim({"--seed", "7", "--transactions", "250"});
  const linked_item item = link_item(sim);

  const sync_run run = sync_all(sim, item.access_token, "", 100);
  REQUIRE(run.pages.size() == 3);
  CHECK(run.pages[0].has_more);
  CHECK(run.pages[1].has_more);
  CHECK_FALSE(run.pages[2].has_more);
  std::set<std::string> seen;
  std::size_t added = 0;
  for (const auto& page : run.pages) {
    CHECK(page.accounts.size() == 6);
    for (const auto& t : page.added) {
      CHECK(seen.insert(t.transaction_id).second);
      ++added;
    }
    CHECK(page.modified.empty());
    CHECK(page.removed.empty());
  }
  CHECK(added == 250);

  const auto truth = truth_of(sim, item.access_token);
  const auto replayed = replay(run.pages);
  REQUIRE(replayed.size() == truth.size());
  for (const auto& [id, t] : truth) {
    INFO(id);
    REQUIRE(replayed.contains(id));
    CHECK(same_transaction(replayed.at(id), t));
  }

  // Every currency the issue asks for shows up, the unofficial one as such.
  std::map<std::string, bool> official_by_currency;
  bool pending_seen = false, inflow_seen = false, outflow_seen = false;
  for (const auto& [id, t] : truth) {
    official_by_currency[t.currency] = t.official_currency;
    pending_seen |= t.pending;
    inflow_seen |= t.amount_minor > 0;
    outflow_seen |= t.amount_minor < 0;
  }
  CHECK(official_by_currency.size() == 5);
  CHECK(official_by_currency["JPY"]);
  CHECK(official_by_currency["BHD"]);
  CHECK_FALSE(official_by_currency["BTC"]);
  CHECK(pending_seen);
  CHECK(inflow_seen);
  CHECK(outflow_seen);

  SECTION("with nothing new, the final cursor returns an empty page") {
    const http_result r = sync_call(sim, item.access_token, run.final_cursor, 100);
    REQUIRE(r.status == 200);
    const auto page = parse_page(r.body);
    CHECK(page.added.empty());
    CHECK_FALSE(page.has_more);
  }
  SECTION("a public token is single-use") {
    const http_result again = post(sim.url() + "/item/public_token/exchange",
                                   "{" + credentials() + R"(,"public_token":")" + item.public_token + R"("})");
    check_plaid_error(again, 400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN");
  }
  CHECK(sim.stop() == 0);  // SIGTERM: clean exit
}

TEST_CASE("the same seed gives the same items and transactions", "[plaid_sim]") {
  std::vector<std::string> ids[2];
  for (auto& list : ids) {
    sim_process sim({"--seed", "42", "--transactions", "30"});
    const linked_item item = link_item(sim);
    list.push_back(item.item_id);
    list.push_back(item.access_token);
    for (const auto& [id, t] : truth_of(sim, item.access_token)) list.push_back(id + ":" + std::to_string(t.amount_minor));
  }
  CHECK(ids[0] == ids[1]);
}

TEST_CASE("a pending transaction that posts arrives as its id in removed and the posted one in added", "[plaid_sim]") {
  sim_process sim({"--seed", "3", "--transactions", "20"});
  const linked_item item = link_item(sim);
  const sync_run first = sync_all(sim, item.access_token, "", 500);

  const http_result pending = control(sim, "/sim/transactions/add",
                                      R"({"access_token":")" + item.access_token + R"(","pending":true,"amount_minor":1234})");
  REQUIRE(pending.status == 200);
  const json added(pending.body);
  const std::string pending_id(added.root["transaction"]["transaction_id"].get_string().value());
  const sync_run second = sync_all(sim, item.access_token, first.final_cursor, 500);
  REQUIRE(second.pages.size() == 1);
  REQUIRE(second.pages[0].added.size() == 1);
  CHECK(second.pages[0].added[0].pending);
  CHECK(second.pages[0].added[0].amount_minor == -1234);  // Plaid's positive outflow, our negative

  const http_result posted = control(sim, "/sim/transactions/post",
                                     R"({"access_token":")" + item.access_token + R"(","transaction_id":")" + pending_id + R"("})");
  INFO(posted.body);
  REQUIRE(posted.status == 200);

  // One update per page, so the removal and the addition land on different pages.
  const sync_run third = sync_all(sim, item.access_token, second.final_cursor, 1);
  REQUIRE(third.pages.size() == 2);
  REQUIRE(third.pages[0].removed.size() == 1);
  CHECK(third.pages[0].removed[0].transaction_id == pending_id);
  CHECK(third.pages[0].added.empty());
  REQUIRE(third.pages[1].added.size() == 1);
  const plaid::transaction& settled = third.pages[1].added[0];
  CHECK_FALSE(settled.pending);
  CHECK(settled.transaction_id != pending_id);
  CHECK(settled.pending_transaction_id == pending_id);
  CHECK(settled.amount_minor == -1234);

  const auto truth = truth_of(sim, item.access_token);
  CHECK_FALSE(truth.contains(pending_id));
  CHECK(truth.contains(settled.transaction_id));
}

TEST_CASE("modified and removed transactions replay to the simulator's truth", "[plaid_sim]") {
  sim_process sim({"--seed", "11", "--transactions", "40"});
  const linked_item item = link_item(sim);
  const sync_run first = sync_all(sim, item.access_token, "", 500);
  const auto before = truth_of(sim, item.access_token);
  auto it = before.begin();
  const std::string modified_id = it->first;
  const std::string removed_id = (++it)->first;
  REQUIRE(control(sim, "/sim/transactions/modify", R"({"access_token":")" + item.access_token + R"(","transaction_id":")" +
                                                       modified_id + R"(","amount_minor":-5000,"name":"REFUND"})")
              .status == 200);
  REQUIRE(control(sim, "/sim/transactions/remove",
                  R"({"access_token":")" + item.access_token + R"(","transaction_id":")" + removed_id + R"("})")
              .status == 200);
  const sync_run second = sync_all(sim, item.access_token, first.final_cursor, 500);
  REQUIRE(second.pages.size() == 1);
  REQUIRE(second.pages[0].modified.size() == 1);
  CHECK(second.pages[0].modified[0].amount_minor == 5000);
  CHECK(second.pages[0].modified[0].name == "REFUND");
  REQUIRE(second.pages[0].removed.size() == 1);
  CHECK(second.pages[0].removed[0].transaction_id == removed_id);

  std::vector<plaid::sync_page> all = first.pages;
  all.insert(all.end(), second.pages.begin(), second.pages.end());
  const auto replayed = replay(all);
  const auto truth = truth_of(sim, item.access_token);
  REQUIRE(replayed.size() == truth.size());
  for (const auto& [id, t] : truth) CHECK(same_transaction(replayed.at(id), t));
}

TEST_CASE("a mutation on page 2 answers Plaid's error, and restarting from the first cursor succeeds", "[plaid_sim]") {
  sim_process sim({"--seed", "5", "--transactions", "250", "--threads", "2"});
  const linked_item item = link_item(sim);

  SECTION("injected") {
    arm_fault(sim, R"({"access_token":")" + item.access_token +
                       R"(","page":2,"error_code":"TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"})");
    const http_result page1 = sync_call(sim, item.access_token, "", 100);
    REQUIRE(page1.status == 200);
    const http_result page2 = sync_call(sim, item.access_token, parse_page(page1.body).next_cursor, 100);
    check_plaid_error(page2, 400, "TRANSACTIONS_ERROR", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION");
    CHECK(json(page2.body).is_null("display_message"));
  }
  SECTION("real: a transaction added between pages 1 and 2") {
    const http_result page1 = sync_call(sim, item.access_token, "", 100);
    REQUIRE(page1.status == 200);
    REQUIRE(control(sim, "/sim/transactions/add", R"({"access_token":")" + item.access_token + R"("})").status == 200);
    const http_result page2 = sync_call(sim, item.access_token, parse_page(page1.body).next_cursor, 100);
    check_plaid_error(page2, 400, "TRANSACTIONS_ERROR", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION");
  }
  // Restart from the cursor the loop began with (empty here): every transaction exactly once.
  const sync_run again = sync_all(sim, item.access_token, "", 100);
  std::set<std::string> seen;
  for (const auto& page : again.pages) {
    for (const auto& t : page.added) CHECK(seen.insert(t.transaction_id).second);
  }
  CHECK(seen.size() == truth_of(sim, item.access_token).size());
}

TEST_CASE("injected errors answer with Plaid's error object and HTTP status", "[plaid_sim]") {
  sim_process sim({"--seed", "9", "--transactions", "10"});
  const linked_item item = link_item(sim);
  struct expectation {
    std::string injected;
    long status;
    std::string type;
    std::string code;
  };
  const std::vector<expectation> cases{
      {"RATE_LIMIT_EXCEEDED", 429, "RATE_LIMIT_EXCEEDED", "TRANSACTIONS_SYNC_LIMIT"},
      {"INTERNAL_SERVER_ERROR", 500, "API_ERROR", "INTERNAL_SERVER_ERROR"},
      {"INSTITUTION_DOWN", 400, "INSTITUTION_ERROR", "INSTITUTION_DOWN"},
      {"INSTITUTION_NOT_RESPONDING", 400, "INSTITUTION_ERROR", "INSTITUTION_NOT_RESPONDING"},
      {"ITEM_LOGIN_REQUIRED", 400, "ITEM_ERROR", "ITEM_LOGIN_REQUIRED"},
      {"ITEM_LOCKED", 400, "ITEM_ERROR", "ITEM_LOCKED"},
      {"USER_PERMISSION_REVOKED", 400, "ITEM_ERROR", "USER_PERMISSION_REVOKED"},
  };
  for (const auto& c : cases) {
    INFO(c.injected);
    // For the next two calls only; the third is served normally.
    arm_fault(sim, R"({"access_token":")" + item.access_token + R"(","endpoint":"/transactions/sync","times":2,"error_code":")" +
                       c.injected + R"("})");
    check_plaid_error(sync_call(sim, item.access_token, "", 100), c.status, c.type, c.code);
    check_plaid_error(sync_call(sim, item.access_token, "", 100), c.status, c.type, c.code);
    CHECK(sync_call(sim, item.access_token, "", 100).status == 200);
  }
  SECTION("a rate limit on /accounts/get is ACCOUNTS_LIMIT") {
    arm_fault(sim, R"({"endpoint":"/accounts/get","error_code":"RATE_LIMIT_EXCEEDED"})");
    const http_result r = post(sim.url() + "/accounts/get", "{" + credentials() + R"(,"access_token":")" + item.access_token + R"("})");
    check_plaid_error(r, 429, "RATE_LIMIT_EXCEEDED", "ACCOUNTS_LIMIT");
  }
}

TEST_CASE("the per-item and per-client /transactions/sync limits answer 429 once a minute's calls are used",
          "[plaid_sim]") {
  sim_process sim({"--seed", "41", "--transactions", "5", "--sync-limit-per-item", "3", "--sync-limit-per-client", "5"});
  const linked_item a = link_item(sim);
  const linked_item b = link_item(sim);
  for (int i = 0; i < 3; ++i) CHECK(sync_call(sim, a.access_token, "", 10).status == 200);
  const http_result item_limited = sync_call(sim, a.access_token, "", 10);
  check_plaid_error(item_limited, 429, "RATE_LIMIT_EXCEEDED", "TRANSACTIONS_SYNC_LIMIT");
  CHECK(json(item_limited.body).string("error_message").find("this item") != std::string::npos);
  for (int i = 0; i < 2; ++i) CHECK(sync_call(sim, b.access_token, "", 10).status == 200);
  const http_result client_limited = sync_call(sim, b.access_token, "", 10);
  check_plaid_error(client_limited, 429, "RATE_LIMIT_EXCEEDED", "TRANSACTIONS_SYNC_LIMIT");
  CHECK(json(client_limited.body).string("error_message").find("client") != std::string::npos);
  // Other endpoints are not limited by the sync limits.
  CHECK(post(sim.url() + "/accounts/get", "{" + credentials() + R"(,"access_token":")" + b.access_token + R"("})").status == 200);
}

TEST_CASE("slow, truncated and malformed answers are served as injected", "[plaid_sim]") {
  sim_process sim({"--seed", "13", "--transactions", "300"});
  const linked_item item = link_item(sim);
  SECTION("slow") {
    arm_fault(sim, R"({"endpoint":"/transactions/sync","delay_ms":400})");
    const http_result r = sync_call(sim, item.access_token, "", 100);
    CHECK(r.status == 200);
    CHECK(r.elapsed >= std::chrono::milliseconds(400));
    parse_page(r.body);
  }
  SECTION("truncated: the connection closes before Content-Length bytes") {
    arm_fault(sim, R"({"page":1,"body":"truncated"})");
    const http_result r = sync_call(sim, item.access_token, "", 100);
    CHECK(r.curl == CURLE_PARTIAL_FILE);
    CHECK(sync_call(sim, item.access_token, "", 100).status == 200);  // one-shot
  }
  SECTION("malformed: a 200 whose body is not JSON") {
    arm_fault(sim, R"({"page":1,"body":"malformed"})");
    const http_result r = sync_call(sim, item.access_token, "", 100);
    CHECK(r.status == 200);
    simdjson::ondemand::parser parser;
    const auto parsed = plaid::parse_sync_page(parser, r.body, currencies);
    CHECK_FALSE(parsed.ok);
  }
}

TEST_CASE("a removed item answers ITEM_NOT_FOUND and the call record counts one successful /item/remove",
          "[plaid_sim]") {
  sim_process sim({"--seed", "17", "--transactions", "10"});
  const linked_item item = link_item(sim);
  const linked_item other = link_item(sim);
  const std::string with_token = "{" + credentials() + R"(,"access_token":")" + item.access_token + R"("})";
  REQUIRE(post(sim.url() + "/item/remove", with_token).status == 200);
  check_plaid_error(post(sim.url() + "/item/remove", with_token), 400, "ITEM_ERROR", "ITEM_NOT_FOUND");
  check_plaid_error(post(sim.url() + "/accounts/get", with_token), 400, "ITEM_ERROR", "ITEM_NOT_FOUND");
  check_plaid_error(sync_call(sim, item.access_token, "", 10), 400, "ITEM_ERROR", "ITEM_NOT_FOUND");
  // The other item is untouched.
  CHECK(sync_call(sim, other.access_token, "", 10).status == 200);
  // A token that was never issued is INVALID_ACCESS_TOKEN.
  check_plaid_error(sync_call(sim, "access-sandbox-00000000-0000-4000-8000-000000000000", "", 10), 400, "INVALID_INPUT",
                    "INVALID_ACCESS_TOKEN");

  const http_result calls = control(sim, "/sim/calls", R"({"endpoint":"/item/remove"})");
  REQUIRE(calls.status == 200);
  const json record(calls.body);
  int successes = 0, failures = 0;
  // A named array: value() on a temporary result would dangle in the range-for.
  const simdjson::dom::array calls_made = record.root["calls"].get_array().value();
  for (auto call : calls_made) {
    CHECK(std::string_view(call["item_id"].get_string().value()) == item.item_id);
    if (call["status"].get_int64().value() == 200) ++successes;
    else {
      ++failures;
      CHECK(std::string_view(call["error_code"].get_string().value()) == "ITEM_NOT_FOUND");
    }
  }
  CHECK(successes == 1);
  CHECK(failures == 1);

  const http_result syncs = control(sim, "/sim/calls", R"({"endpoint":"/transactions/sync","item_id":")" + item.item_id + R"("})");
  CHECK(json(syncs.body).root["calls"].get_array().value().size() == 1);
}

TEST_CASE("wrong or missing credentials are refused as Plaid refuses them", "[plaid_sim]") {
  sim_process sim({"--seed", "19", "--transactions", "5", "--client-id", "cid-123", "--secret", "s3cret"});
  const std::string create_fields = R"("institution_id":"ins_109508","initial_products":["transactions"])";
  check_plaid_error(post(sim.url() + "/sandbox/public_token/create", R"({"client_id":"cid-123","secret":"wrong",)" + create_fields + "}"),
                    400, "INVALID_INPUT", "INVALID_API_KEYS");
  check_plaid_error(post(sim.url() + "/sandbox/public_token/create", "{" + create_fields + "}",
                         {"PLAID-CLIENT-ID: cid-123", "PLAID-SECRET: nope"}),
                    400, "INVALID_INPUT", "INVALID_API_KEYS");
  check_plaid_error(post(sim.url() + "/sandbox/public_token/create", "{" + create_fields + "}"), 400, "INVALID_REQUEST",
                    "MISSING_FIELDS");
  // Right credentials in the headers work.
  CHECK(post(sim.url() + "/sandbox/public_token/create", "{" + create_fields + "}",
             {"PLAID-CLIENT-ID: cid-123", "PLAID-SECRET: s3cret"})
            .status == 200);
  check_plaid_error(post(sim.url() + "/accounts/get", "not json"), 400, "INVALID_REQUEST", "INVALID_BODY");
  check_plaid_error(post(sim.url() + "/transactions/get", "{}"), 404, "INVALID_REQUEST", "NOT_FOUND");
  // Past request_body_bytes_max (1 MiB) the answer is 413, given on the headers alone (the client
  // waits for "100 Continue", so no unread body makes the close a reset).
  CHECK(post(sim.url() + "/accounts/get", std::string(2 << 20, ' '), {"Expect: 100-continue"}).status == 413);
}

TEST_CASE("an expired public token cannot be exchanged", "[plaid_sim]") {
  sim_process sim({"--seed", "37", "--transactions", "5", "--public-token-ttl-s", "0"});
  const http_result created = post(sim.url() + "/sandbox/public_token/create",
                                   "{" + credentials() + R"(,"institution_id":"ins_109508","initial_products":["transactions"]})");
  REQUIRE(created.status == 200);
  const http_result exchanged = post(sim.url() + "/item/public_token/exchange",
                                     "{" + credentials() + R"(,"public_token":")" + json(created.body).string("public_token") + R"("})");
  check_plaid_error(exchanged, 400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN");
}

TEST_CASE("a cursor from another item, a garbled cursor and a bad count are INVALID_FIELD", "[plaid_sim]") {
  sim_process sim({"--seed", "23", "--transactions", "30"});
  const linked_item a = link_item(sim);
  const linked_item b = link_item(sim);
  const sync_run run = sync_all(sim, a.access_token, "", 10);
  const http_result crossed = sync_call(sim, b.access_token, run.pages[0].next_cursor, 10);
  check_plaid_error(crossed, 400, "INVALID_REQUEST", "INVALID_FIELD");
  CHECK(json(crossed.body).string("error_message") == "cursor not associated with access_token");
  check_plaid_error(sync_call(sim, a.access_token, "!!not-a-cursor!!", 10), 400, "INVALID_REQUEST", "INVALID_FIELD");
  check_plaid_error(sync_call(sim, a.access_token, "", 501), 400, "INVALID_REQUEST", "INVALID_FIELD");
  check_plaid_error(sync_call(sim, a.access_token, "", 0), 400, "INVALID_REQUEST", "INVALID_FIELD");
}

TEST_CASE("a signed webhook verifies with the JWK from /webhook_verification_key/get", "[plaid_sim]") {
  sim_process sim({"--seed", "29", "--transactions", "5"});
  const linked_item item = link_item(sim);

  const sent_webhook hook = send_webhook(sim, item, "");
  const json body(hook.body);
  CHECK(body.string("webhook_type") == "TRANSACTIONS");
  CHECK(body.string("webhook_code") == "SYNC_UPDATES_AVAILABLE");
  CHECK(body.string("item_id") == item.item_id);

  const jwt_parts jwt = split_jwt(hook.verification);
  const json header(jwt.header);
  CHECK(header.string("alg") == "ES256");
  CHECK(header.string("typ") == "JWT");
  const std::string kid = header.string("kid");
  const json payload(jwt.payload);
  CHECK(payload.string("request_body_sha256") == sha256_hex(hook.body));
  const std::int64_t iat = payload.root["iat"].get_int64().value();
  CHECK(std::abs(now_s() - iat) <= 60);

  const std::string jwk = jwk_for(sim, kid);
  REQUIRE(!jwk.empty());
  const json key(jwk);
  CHECK(key.string("kty") == "EC");
  CHECK(key.string("crv") == "P-256");
  CHECK(key.string("alg") == "ES256");
  CHECK(key.string("use") == "sig");
  CHECK(key.is_null("expired_at"));
  CHECK(key.root["created_at"].get_int64().value() < now_s());
  CHECK(verify_es256(jwk, jwt));

  SECTION("signed with another key under the same kid, it does not verify") {
    const sent_webhook forged = send_webhook(sim, item, R"(,"signing":"wrong_key")");
    const jwt_parts parts = split_jwt(forged.verification);
    CHECK(json(parts.header).string("kid") == kid);
    CHECK_FALSE(verify_es256(jwk, parts));
  }
  SECTION("an altered body no longer matches request_body_sha256") {
    const sent_webhook altered = send_webhook(sim, item, R"(,"alter_body":true)");
    const jwt_parts parts = split_jwt(altered.verification);
    CHECK(verify_es256(jwk, parts));
    CHECK(json(parts.payload).string("request_body_sha256") != sha256_hex(altered.body));
  }
  SECTION("a stale iat is ten minutes old") {
    const jwt_parts parts = split_jwt(send_webhook(sim, item, R"(,"signing":"stale_iat")").verification);
    CHECK(verify_es256(jwk, parts));
    CHECK(now_s() - json(parts.payload).root["iat"].get_int64().value() >= 600);
  }
  SECTION("alg none and HS256 are offered for attack tests") {
    CHECK(json(split_jwt(send_webhook(sim, item, R"(,"signing":"alg_none")").verification).header).string("alg") == "none");
    const jwt_parts hs = split_jwt(send_webhook(sim, item, R"(,"signing":"alg_hs256")").verification);
    CHECK(json(hs.header).string("alg") == "HS256");
    CHECK_FALSE(verify_es256(jwk, hs));
  }
  SECTION("the expired key is published with expired_at in the past; an unknown kid is not") {
    const jwt_parts parts = split_jwt(send_webhook(sim, item, R"(,"signing":"expired_key")").verification);
    const std::string expired = jwk_for(sim, json(parts.header).string("kid"));
    REQUIRE(!expired.empty());
    CHECK(json(expired).root["expired_at"].get_int64().value() < now_s());
    CHECK(verify_es256(expired, parts));
    const jwt_parts unknown = split_jwt(send_webhook(sim, item, R"(,"signing":"unknown_kid")").verification);
    CHECK(jwk_for(sim, json(unknown.header).string("kid")).empty());
  }
  const http_result calls = control(sim, "/sim/calls", R"({"endpoint":"webhook:SYNC_UPDATES_AVAILABLE"})");
  CHECK(json(calls.body).root["calls"].get_array().value().size() >= 1);
}

TEST_CASE("100 items of 1,000 transactions are served whole and fast", "[plaid_sim][scale]") {
  const auto start = std::chrono::steady_clock::now();
  sim_process sim({"--seed", "31", "--items", "100", "--transactions", "1000"});
  const auto ready = std::chrono::steady_clock::now();
  const http_result listed = control(sim, "/sim/items", "{}");
  REQUIRE(listed.status == 200);
  const json items(listed.body);
  std::vector<std::string> tokens;
  const simdjson::dom::array item_list = items.root["items"].get_array().value();
  for (auto it : item_list) {
    tokens.emplace_back(it["access_token"].get_string().value());
  }
  REQUIRE(tokens.size() == 100);
  // Fetch every page on one kept-alive connection, timing the HTTP side only; parse afterwards.
  CURL* curl = curl_easy_init();
  REQUIRE(curl != nullptr);
  std::vector<std::string> bodies;
  long connections = 0;
  std::chrono::duration<double> fetching{0};
  for (const auto& token : tokens) {
    std::string cursor;
    for (int guard = 0; guard < 100; ++guard) {
      const auto before = std::chrono::steady_clock::now();
      http_result r = post_on(curl, sim.url() + "/transactions/sync",
                              "{" + credentials() + R"(,"access_token":")" + token + R"(","cursor":")" + cursor +
                                  R"(","count":500})");
      fetching += std::chrono::steady_clock::now() - before;
      long connects = 0;
      curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
      connections += connects;
      REQUIRE(r.status == 200);
      // The cursor and has_more sit at the end of the body; the parser checks them properly below.
      const json tail(r.body);
      cursor = tail.string("next_cursor");
      const bool has_more = tail.root["has_more"].get_bool().value();
      bodies.push_back(std::move(r.body));
      if (!has_more) break;
    }
  }
  curl_easy_cleanup(curl);
  CHECK(connections == 1);  // keep-alive: one connection for all 200 pages

  std::size_t transactions = 0, bytes = 0;
  std::set<std::string> seen;
  const auto parse_start = std::chrono::steady_clock::now();
  for (const auto& body : bodies) {
    bytes += body.size();
    const auto page = parse_page(body);
    transactions += page.added.size();
    for (const auto& t : page.added) seen.insert(t.transaction_id);
  }
  const std::chrono::duration<double> parsing = std::chrono::steady_clock::now() - parse_start;
  CHECK(bodies.size() == 200);
  CHECK(transactions == 100'000);
  CHECK(seen.size() == 100'000);
  std::cout << "plaid_sim scale: start-up (100 items x 1,000 generated) " << std::chrono::duration<double>(ready - start).count()
            << " s; served " << bodies.size() << " pages of 500 (" << bytes / (1 << 20) << " MiB) in " << fetching.count()
            << " s = " << bodies.size() / fetching.count() << " pages/s, " << transactions / fetching.count()
            << " transactions/s over one keep-alive connection; parse_sync_page of them all took " << parsing.count()
            << " s" << std::endl;
}
