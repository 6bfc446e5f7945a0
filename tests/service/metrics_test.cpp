#include <catch2/catch.hpp>

#include <cstring>
#include <regex>
#include <sstream>
#include <thread>

#include "service/metrics.hpp"

using namespace bankworker::service;

namespace {

// Every line of an exposition is a comment (# HELP / # TYPE) or `name{labels} value`, and every
// sample belongs to the family its TYPE line announced.
void check_prometheus_text(const std::string& text) {
  static const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*)");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9]+(\.[0-9]+)?|\+Inf))");
  std::istringstream lines(text);
  std::string line;
  std::string family;
  while (std::getline(lines, line)) {
    INFO(line);
    std::smatch match;
    if (std::regex_match(line, match, type)) {
      family = match[1];
    } else if (!std::regex_match(line, help)) {
      REQUIRE(std::regex_match(line, match, sample));
      const std::string name = match[1];
      CHECK((name == family || name == family + "_bucket" || name == family + "_sum" || name == family + "_count"));
    }
  }
}

}  // namespace

TEST_CASE("counters render in the Prometheus text format and move when work happens", "[metrics]") {
  metrics_registry registry;
  auto& stored = registry.add_counter("bankworker_webhook_requests_total", "Webhook requests by outcome.",
                                      {{"outcome", "stored"}});
  auto& duplicate = registry.add_counter("bankworker_webhook_requests_total", "Webhook requests by outcome.",
                                         {{"outcome", "duplicate"}});
  stored.fetch_add(3);
  duplicate.fetch_add(1);
  CHECK(&registry.add_counter("bankworker_webhook_requests_total", "", {{"outcome", "stored"}}) == &stored);

  const std::string text = registry.render();
  CHECK(text ==
        "# HELP bankworker_webhook_requests_total Webhook requests by outcome.\n"
        "# TYPE bankworker_webhook_requests_total counter\n"
        "bankworker_webhook_requests_total{outcome=\"stored\"} 3\n"
        "bankworker_webhook_requests_total{outcome=\"duplicate\"} 1\n");
  check_prometheus_text(text);
}

TEST_CASE("histograms print cumulative buckets in seconds without floating point", "[metrics]") {
  metrics_registry registry;
  auto& latency = registry.add_histogram("bankworker_http_request_duration_seconds", "HTTP request latency.",
                                         {{"route", "/webhooks/stripe"}}, {1'000, 2'500, 1'000'000});
  latency.record_us(900);
  latency.record_us(1'000);  // on the bound: in the 0.001 bucket (le is inclusive)
  latency.record_us(2'000);
  latency.record_us(3'000'000);
  const std::string text = registry.render();
  CHECK(text.find("_bucket{route=\"/webhooks/stripe\",le=\"0.001\"} 2\n") != std::string::npos);
  CHECK(text.find("_bucket{route=\"/webhooks/stripe\",le=\"0.0025\"} 3\n") != std::string::npos);
  CHECK(text.find("_bucket{route=\"/webhooks/stripe\",le=\"1\"} 3\n") != std::string::npos);
  CHECK(text.find("_bucket{route=\"/webhooks/stripe\",le=\"+Inf\"} 4\n") != std::string::npos);
  CHECK(text.find("_sum{route=\"/webhooks/stripe\"} 3.0039\n") != std::string::npos);
  CHECK(text.find("_count{route=\"/webhooks/stripe\"} 4\n") != std::string::npos);
  check_prometheus_text(text);
}

TEST_CASE("gauges are read at scrape time and label values are escaped", "[metrics]") {
  metrics_registry registry;
  std::int64_t depth = 7;
  registry.add_gauge("bankworker_queue_depth", "Jobs waiting.", {{"kind", "plaid.sync"}, {"note", "a\"b\\c\nd"}},
                     [&] { return depth; });
  registry.add_gauge("bankworker_process_resident_memory_bytes", "Resident memory.", {}, process_resident_bytes);
  depth = 9;
  const std::string text = registry.render();
  CHECK(text.find("bankworker_queue_depth{kind=\"plaid.sync\",note=\"a\\\"b\\\\c\\nd\"} 9\n") != std::string::npos);
  CHECK(process_resident_bytes() > 0);
  check_prometheus_text(text);
}

TEST_CASE("a counter kept by another component is read at scrape time and typed as a counter", "[metrics]") {
  metrics_registry registry;
  std::uint64_t hits = 0;
  registry.add_counter_reader("bankworker_key_cache_hits_total", "Key lookups answered from the cache.", {},
                              [&hits] { return hits; });
  CHECK(registry.render().find("bankworker_key_cache_hits_total 0\n") != std::string::npos);
  hits = 41;
  ++hits;
  const std::string text = registry.render();
  CHECK(text ==
        "# HELP bankworker_key_cache_hits_total Key lookups answered from the cache.\n"
        "# TYPE bankworker_key_cache_hits_total counter\n"
        "bankworker_key_cache_hits_total 42\n");
  check_prometheus_text(text);
}

TEST_CASE("counters lose no increments under concurrent updates", "[metrics]") {
  metrics_registry registry;
  auto& jobs = registry.add_counter("bankworker_jobs_succeeded_total", "Jobs done.", {{"kind", "noop"}});
  auto& latency = registry.add_histogram("bankworker_job_duration_seconds", "Job duration.", {{"kind", "noop"}});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10'000; ++i) {
        jobs.fetch_add(1, std::memory_order_relaxed);
        latency.record_us(static_cast<std::uint64_t>(i));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(jobs.load() == 40'000);
  CHECK(latency.count() == 40'000);
}

TEST_CASE("build info and the standard process series render with their Prometheus names", "[worker][metrics]") {
  bankworker::service::metrics_registry metrics;
  bankworker::service::add_build_info(metrics, "1.2.3", "abc123def456");
  bankworker::service::add_process_metrics(metrics);
  const std::string text = metrics.render();
  CHECK_THAT(text, Catch::Contains("\nbankworker_build_info{version=\"1.2.3\",commit=\"abc123def456\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE process_cpu_seconds_total counter\n"));
  for (const char* gauge : {"process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
                            "process_max_fds", "process_start_time_seconds"}) {
    INFO(gauge);
    CHECK_THAT(text, Catch::Contains(std::string("# TYPE ") + gauge + " gauge\n"));
    const auto at = text.find(std::string("\n") + gauge + " ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stoll(text.substr(at + std::strlen(gauge) + 2)) > 0);  // real values, read from /proc
  }
  // CPU time is printed as decimal seconds, not microseconds.
  const auto cpu = text.find("\nprocess_cpu_seconds_total ");
  REQUIRE(cpu != std::string::npos);
  CHECK(std::stod(text.substr(cpu + 27)) < 1e6);
}
