// contrib/prometheus/alerts.yml and contrib/grafana/bankworker.json against a running worker: every
// rule is complete (alert, expr, for, labels, annotations), every metric an alert or a panel names
// is on that worker's /metrics, and promtool accepts the rules when Debian's prometheus package is
// installed. A metric renamed in the code without the contrib files following fails here.
#include <catch2/catch.hpp>
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <simdjson.h>

#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace std::chrono_literals;
namespace test = bankworker::test;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The series names a /metrics text serves: each family, and a histogram's _bucket, _sum, _count.
std::set<std::string> served_names(const std::string& exposition) {
  std::set<std::string> names;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("# TYPE ")) continue;
    std::istringstream words(line.substr(7));
    std::string name;
    std::string type;
    words >> name >> type;
    names.insert(name);
    if (type == "histogram") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(name + suffix);
    }
  }
  return names;
}

// The metric names a PromQL expression uses: ours and the process_* ones.
std::set<std::string> metric_names_in(const std::string& expression) {
  static const std::regex metric(R"(\b(bankworker_[a-z0-9_]+|process_[a-z0-9_]+)\b)");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(expression.begin(), expression.end(), metric); it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1].str());
  }
  return names;
}

struct alert_rule {
  std::string name;
  std::set<std::string> keys;  // the rule's own keys (alert, expr, for, labels, annotations)
  std::string expression;
};

// The rules of an alerts file, read by indentation: each "- alert:" item and the keys at its
// level; an expression written as a folded block (>-) is joined from its deeper lines.
std::vector<alert_rule> alert_rules(const std::string& yaml) {
  std::vector<alert_rule> rules;
  std::size_t key_indent = 0;
  bool in_expression = false;
  std::istringstream lines(yaml);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    const std::string body = line.substr(indent);
    if (body.starts_with("- alert:")) {
      rules.push_back({body.substr(8), {"alert"}, {}});
      key_indent = indent + 2;
      in_expression = false;
      continue;
    }
    if (rules.empty()) continue;
    if (in_expression && indent > key_indent) {
      rules.back().expression += " " + body;
      continue;
    }
    in_expression = false;
    if (indent != key_indent || body.starts_with("- ")) continue;
    const std::string key = body.substr(0, body.find(':'));
    rules.back().keys.insert(key);
    if (key == "expr") {
      rules.back().expression = body.substr(5);
      in_expression = true;
    }
  }
  return rules;
}

// The worker's /metrics a moment after start-up (the database gauges read once).
std::string running_worker_metrics() {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  test::child_process worker(BANKWORKER_BINARY, {"run"},
                             {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                              {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                              {"BANKWORKER_PLAID_BASE_URL", "http://127.0.0.1:9"},
                              {"BANKWORKER_PLAID_CLIENT_ID", "client"},
                              {"BANKWORKER_PLAID_SECRET", "secret"},
                              {"BANKWORKER_LOG_LEVEL", "error"}});
  const std::string metrics_url = "http://127.0.0.1:" + std::to_string(admin_port) + "/metrics";
  REQUIRE(test::eventually([&] { return test::http_get(metrics_url).status == 200; }));
  const std::string exposition = test::http_get(metrics_url).body;
  worker.signal(SIGTERM);
  CHECK(worker.wait(20s) == 0);
  return exposition;
}

}  // namespace

TEST_CASE("every alert rule is complete and names only metrics a running worker serves, and the dashboard too",
          "[pg][contrib][e2e]") {
  const std::set<std::string> served = served_names(running_worker_metrics());
  REQUIRE(served.contains("bankworker_jobs"));

  const std::string alerts_path = std::string(BANKWORKER_CONTRIB_DIR) + "/prometheus/alerts.yml";
  const std::vector<alert_rule> rules = alert_rules(read_text(alerts_path));
  REQUIRE(rules.size() >= 7);
  for (const alert_rule& rule : rules) {
    INFO("alert " << rule.name);
    for (const char* key : {"alert", "expr", "for", "labels", "annotations"}) CHECK(rule.keys.contains(key));
    const std::set<std::string> named = metric_names_in(rule.expression);
    CHECK(!named.empty());
    for (const std::string& name : named) {
      INFO("metric " << name);
      CHECK(served.contains(name));
    }
  }

  simdjson::dom::parser parser;
  simdjson::dom::element dashboard;
  REQUIRE(parser.load(std::string(BANKWORKER_CONTRIB_DIR) + "/grafana/bankworker.json").get(dashboard) ==
          simdjson::SUCCESS);
  std::size_t queries = 0;
  for (simdjson::dom::element panel : dashboard["panels"].get_array()) {
    for (simdjson::dom::element target : panel["targets"].get_array()) {
      const std::string expression(target["expr"].get_string().value());
      INFO("panel " << panel["title"].get_string().value() << ": " << expression);
      const std::set<std::string> named = metric_names_in(expression);
      CHECK(!named.empty());
      for (const std::string& name : named) {
        INFO("metric " << name);
        CHECK(served.contains(name));
      }
      ++queries;
    }
  }
  CHECK(queries >= 10);

  // promtool ships in Debian's prometheus package; where it is installed it checks the PromQL too.
  if (std::system("command -v promtool >/dev/null 2>&1") == 0) {
    CHECK(std::system(("promtool check rules " + alerts_path + " >/dev/null").c_str()) == 0);
  } else {
    WARN("promtool not installed (Debian package prometheus): the rules' PromQL was not checked");
  }
}
