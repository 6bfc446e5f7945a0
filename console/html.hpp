#pragma once
// The console's HTML (pure, no I/O): the layout every page shares, the login form, the stylesheet,
// and the headers every console response carries. Every value that reaches a page goes through
// service::escape_html; the layout takes a body that is already escaped.
//
// The Content-Security-Policy allows no script at all (default-src 'none' and no script-src), so an
// injected <script> never runs even where escaping was forgotten; styles come only from the
// console's own stylesheet, forms post only to the console, and no other site may frame it.

#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "service/admin_page.hpp"

namespace bankworker::console {

using service::escape_html;
using service::append_escaped_html;

inline constexpr std::string_view content_security_policy =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'";

// Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, Referrer-Policy, Cache-Control.
std::vector<std::pair<std::string, std::string>> security_headers();

inline constexpr std::string_view stylesheet_path = "/console/style.css";
std::string_view stylesheet() noexcept;

struct nav_link {
  std::string href;  // absolute path
  std::string title;
};

// A whole page: head (title, stylesheet), navigation and the operator's sign-out form (when
// signed in: operator_name not empty), then `body_html` (escaped by the caller).
std::string render_page(std::string_view title, std::string_view operator_name, std::span<const nav_link> links,
                        std::string_view csrf_token, std::string_view body_html);

// <input type="hidden" name="csrf" value="…">
std::string csrf_input(std::string_view token);

// The login form: its one-time token (the double-submit partner of the login cookie) and a
// message (escaped here) above the form.
std::string login_body(std::string_view login_token, std::string_view message);

}  // namespace bankworker::console
