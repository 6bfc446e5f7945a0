#pragma once
// Inside the console: what a page gets (the signed-in operator, the parsed fields, the parts) and
// what it returns; console.cpp routes to these and wraps them (session, CSRF, headers, layout).
// Every function here blocks (it queries the database) and runs on the DB thread pool.

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "console/auth.hpp"
#include "core/uuid.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "queue/queue.hpp"
#include "service/admin_page.hpp"

namespace bankworker::console {

struct page_context {
  db::pool& connections;
  const db::key_store& keys;
  queue::job_queue& jobs;
  const session& who;
  std::string_view method;  // GET or POST (a POST has passed the CSRF check)
  std::string_view path;    // after /console ("/jobs/12")
  std::vector<std::pair<std::string, std::string>> fields;
  std::span<const service::admin_page> pages;

  std::optional<std::string_view> field(std::string_view name) const;
  // The field's value, or nothing when absent or empty (an empty filter box means no filter).
  std::optional<std::string_view> filled(std::string_view name) const;
  // Appends one row to the tenant's audit chain now, in its own transaction (actor
  // "operator:NAME", details naming the operator). Throws when it cannot: the caller shows nothing.
  void audit(const core::uuid& tenant, std::string_view action, std::string_view subject) const;
  std::string csrf_input() const;
};

struct page_result {
  unsigned status = 200;
  std::string title;
  std::string body_html;  // escaped
  std::string redirect;   // a POST's answer: 303 to this path (absolute) instead of a page
};

page_result error_page(unsigned status, std::string_view title, std::string_view reason);

page_result overview_page(const page_context& context);
page_result jobs_page(const page_context& context);
page_result job_page(const page_context& context, std::int64_t job_id);
page_result job_change(const page_context& context, std::int64_t job_id, bool retry);
page_result jobs_confirm_page(const page_context& context);
page_result jobs_bulk_change(const page_context& context);
page_result audit_page(const page_context& context);
page_result reconcile_page(const page_context& context);

// A tenant's name and id for a page heading, escaped; read inside the tenant's scope. Nothing when
// no such tenant.
std::optional<std::string> tenant_heading(db::pool& connections, const core::uuid& tenant);

}  // namespace bankworker::console
