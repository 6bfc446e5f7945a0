// The console's layout, stylesheet and security headers (console/html.hpp).
#include "console/html.hpp"

namespace bankworker::console {

std::vector<std::pair<std::string, std::string>> security_headers() {
  return {{"Content-Security-Policy", std::string(content_security_policy)},
          {"X-Frame-Options", "DENY"},
          {"X-Content-Type-Options", "nosniff"},
          {"Referrer-Policy", "no-referrer"},
          {"Cache-Control", "no-store"}};
}

std::string_view stylesheet() noexcept {
  return "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}"
         "header{background:#1d2330;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center}"
         "header a{color:#cfe0ff;text-decoration:none}header form{margin-left:auto}"
         "main{padding:1rem 1.5rem;max-width:80rem}"
         "table{border-collapse:collapse;background:#fff;margin:.5rem 0}"
         "th,td{border:1px solid #d5d9e0;padding:.25rem .5rem;text-align:left;vertical-align:top}"
         "th{background:#eef1f5}pre{background:#fff;border:1px solid #d5d9e0;padding:.5rem;white-space:pre-wrap;"
         "word-break:break-all}"
         ".error{color:#a40000;font-weight:bold}.ok{color:#006b21;font-weight:bold}"
         "form.inline{display:inline}label{margin-right:.75rem}button{cursor:pointer}\n";
}

std::string csrf_input(std::string_view token) {
  std::string html = "<input type=\"hidden\" name=\"csrf\" value=\"";
  append_escaped_html(token, html);
  html += "\">";
  return html;
}

std::string render_page(std::string_view title, std::string_view operator_name, std::span<const nav_link> links,
                        std::string_view csrf_token, std::string_view body_html) {
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>";
  append_escaped_html(title, html);
  html += " · bankworker</title><link rel=\"stylesheet\" href=\"";
  html += stylesheet_path;
  html += "\"></head><body><header><strong>bankworker</strong>";
  if (!operator_name.empty()) {
    for (const nav_link& link : links) {
      html += "<a href=\"";
      append_escaped_html(link.href, html);
      html += "\">";
      append_escaped_html(link.title, html);
      html += "</a>";
    }
    html += "<form method=\"post\" action=\"/console/logout\">" + csrf_input(csrf_token) + "<span>";
    append_escaped_html(operator_name, html);
    html += "</span> <button type=\"submit\">Sign out</button></form>";
  }
  html += "</header><main><h1>";
  append_escaped_html(title, html);
  html += "</h1>";
  html += body_html;
  html += "</main></body></html>\n";
  return html;
}

std::string login_body(std::string_view login_token, std::string_view message) {
  std::string html;
  if (!message.empty()) {
    html += "<p class=\"error\">";
    append_escaped_html(message, html);
    html += "</p>";
  }
  html += "<form method=\"post\" action=\"/console/login\"><input type=\"hidden\" name=\"login_token\" value=\"";
  append_escaped_html(login_token, html);
  html += "\"><p><label>Operator <input name=\"name\" autocomplete=\"username\" required></label></p>"
          "<p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" "
          "required></label></p><p><button type=\"submit\">Sign in</button></p></form>";
  return html;
}

}  // namespace bankworker::console
