#pragma once
// A page a provider adds to the operator console (console/, issue #22) without the console knowing
// the provider: the Plaid room contributes its connections page, the Stripe room its webhook inbox.
// The console wraps every page with what it owns: the operator's session, the CSRF check of every
// POST, the security headers, the layout, and the audit rows. A page returns escaped HTML (every
// value through escape_html) and names each tenant whose data it showed or changed; the console
// appends one audit row per tenant named, before the page reaches the operator, and answers 500
// without the page when the append fails, so no tenant read goes unrecorded.
//
// Callbacks are blocking (they query the database): the console runs them on the DB thread pool.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/uuid.hpp"

namespace bankworker::service {

// `text` with &, <, >, " and ' replaced by their character references: safe in element content
// and in a quoted attribute value.
std::string escape_html(std::string_view text);
void append_escaped_html(std::string_view text, std::string& out);
// <td>escaped text</td>
std::string table_cell(std::string_view text);

// A query string or form body (application/x-www-form-urlencoded) decoded into its fields, in
// order; nothing when it is malformed (a bad %-escape). '+' is a space.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_form(std::string_view text);
// `text` %-encoded for a query string value (unreserved characters kept).
std::string url_encode(std::string_view text);

struct admin_request {
  std::string operator_name;  // who is signed in
  std::string method;         // GET or POST (a POST has passed the CSRF check)
  std::vector<std::pair<std::string, std::string>> fields;  // the query (GET) or the form (POST)
  // A hidden input carrying the session's CSRF token, for every form the page renders.
  std::string csrf_input;

  // The first field with this name, or nothing.
  std::optional<std::string_view> field(std::string_view name) const;
};

// One audit row the console appends to `tenant`'s chain (actor: the operator).
struct admin_audit {
  core::uuid tenant;
  std::string action;   // "console.plaid.connections.viewed", …
  std::string subject;  // the id of what was read or changed (may be empty)
};

struct admin_answer {
  unsigned status = 200;  // 200, or 400/404 with the reason in body_html
  std::string body_html;  // escaped HTML, placed inside the console's layout
  std::vector<admin_audit> audited;
  std::string redirect;  // after a POST: where the browser goes next (303), relative to /console
};

// A page's refusal: `status` (400, 404, …) with the reason, escaped, on the page.
admin_answer admin_refusal(unsigned status, std::string_view reason);

struct admin_page {
  std::string path;   // under /console/p/, e.g. "plaid/connections"
  std::string title;  // in the navigation
  std::function<admin_answer(const admin_request&)> render;   // GET
  std::function<admin_answer(const admin_request&)> act;      // POST; empty when the page has no form
  // A section of the overview: aggregate counts only, never a tenant's data (not audited).
  std::function<std::string()> overview_html;
};

}  // namespace bankworker::service
