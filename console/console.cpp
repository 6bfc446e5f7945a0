// The console's front door (console/console.hpp): the routes, signing in and out, the session and
// CSRF checks, the headers and layout around every page, and routing to the pages (console/pages*.cpp)
// and the providers' pages (service/admin_page.hpp).
#include "console/console.hpp"

#include <charconv>
#include <exception>
#include <mutex>

#include "console/html.hpp"
#include "console/pages.hpp"
#include "crypto/secret.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::console {

namespace asio = boost::asio;
using service::http_request;
using service::http_response;
using service::http_route;

namespace {

constexpr std::string_view session_cookie = "bw_console";
constexpr std::string_view login_cookie = "bw_console_login";
constexpr std::chrono::seconds login_form_lifetime{900};
constexpr std::string_view prefix = "/console";

// The value of cookie `name` in the request's Cookie header(s), or nothing.
std::optional<std::string> cookie_value(const http_request& request, std::string_view name) {
  for (const auto& [header, value] : request.headers) {
    if (!service::equal_ignoring_case(header, "Cookie")) continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      const std::size_t end = rest.find(';');
      std::string_view pair = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
      while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
      const std::size_t equals = pair.find('=');
      if (equals != std::string_view::npos && pair.substr(0, equals) == name) return std::string(pair.substr(equals + 1));
    }
  }
  return std::nullopt;
}

// Secure when the operator reached the console over TLS (through a proxy that says so).
std::string cookie_text(const http_request& request, std::string_view name, std::string_view value,
                        std::string_view path, std::chrono::seconds max_age) {
  std::string text = std::string(name) + "=" + std::string(value) + "; Path=" + std::string(path) +
                     "; Max-Age=" + std::to_string(max_age.count()) + "; HttpOnly; SameSite=Strict";
  if (service::equal_ignoring_case(request.header("X-Forwarded-Proto"), "https")) text += "; Secure";
  return text;
}

http_response with_headers(http_response response) {
  for (auto& header : security_headers()) response.headers.push_back(std::move(header));
  return response;
}

http_response html_response(unsigned status, std::string body) {
  return with_headers(http_response{status, "text/html; charset=utf-8", std::move(body), {}});
}

http_response redirect(std::string location) {
  http_response response{303, "text/plain; charset=utf-8", {}, {}};
  response.headers.emplace_back("Location", std::move(location));
  return with_headers(std::move(response));
}

std::optional<std::int64_t> parse_id(std::string_view text) {
  std::int64_t id = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (error != std::errc{} || end != text.data() + text.size() || id <= 0) return std::nullopt;
  return id;
}

}  // namespace

struct console::state {
  state(console_parts parts_, console_settings settings_, std::vector<service::admin_page> pages_)
      : parts(parts_), settings(settings_), pages(std::move(pages_)), limiter(settings_.login) {
    links = {{"/console/", "Overview"}, {"/console/jobs", "Jobs"}, {"/console/audit", "Audit"},
             {"/console/reconcile", "Reconciliation"}};
    for (const service::admin_page& page : pages) links.push_back({"/console/p/" + page.path, page.title});
  }

  console_parts parts;
  const console_settings settings;
  const std::vector<service::admin_page> pages;
  std::vector<nav_link> links;
  login_limiter limiter;
  std::once_flag dummy_once;
  std::string dummy_hash;  // set once, under dummy_once

  // An unknown name costs what a known one does, so the answer's timing does not say which
  // names exist.
  const std::string& timing_hash() {
    std::call_once(dummy_once, [this] {
      dummy_hash = hash_password(crypto::secret::copy_of("no operator has this password"), interactive_password_cost());
    });
    return dummy_hash;
  }

  http_response login_page(const http_request& request, unsigned status, std::string_view message) {
    const std::string token = random_token_hex(32);
    http_response response =
        html_response(status, render_page("Sign in", {}, {}, {}, login_body(token, message)));
    response.headers.emplace_back("Set-Cookie", cookie_text(request, login_cookie, token, "/console/login",
                                                            login_form_lifetime));
    return response;
  }

  http_response login(const http_request& request, const std::vector<std::pair<std::string, std::string>>& fields) {
    const auto field = [&](std::string_view name) -> std::string_view {
      for (const auto& [key, value] : fields) {
        if (key == name) return value;
      }
      return {};
    };
    const auto form_token = cookie_value(request, login_cookie);
    if (!form_token || !tokens_equal(*form_token, field("login_token"))) {
      return login_page(request, 403, "The sign-in form expired or came from elsewhere; sign in again.");
    }
    const std::string name(field("name"));
    if (const auto refused = limiter.refused(request.remote_address, name)) {
      return login_page(request, 429, "Too many failed sign-ins for this " + *refused + "; wait " +
                                          std::to_string(settings.login.window.count() / 60) + " minutes.");
    }
    const crypto::secret password = crypto::secret::copy_of(field("password"));
    std::optional<operator_credentials> found;
    {
      auto lease = parts.connections.checkout();
      pqxx::read_transaction tx(lease.connection());
      if (!check_operator_name(name)) found = find_operator(tx, name);
    }
    bool matches = false;
    if (found) matches = password_matches(found->password_hash, password);
    else password_matches(timing_hash(), password);  // the same work, its answer ignored
    if (!matches) {
      limiter.record_failure(request.remote_address, name);
      return login_page(request, 401, "Operator name or password is wrong.");
    }
    limiter.record_success(name);
    opened_session opened;
    {
      auto lease = parts.connections.checkout();
      pqxx::work tx(lease.connection());
      opened = open_session(tx, found->id, settings.session_lifetime);
      tx.commit();
    }
    http_response response = redirect("/console/");
    response.headers.emplace_back("Set-Cookie",
                                  cookie_text(request, session_cookie, opened.cookie, "/console", settings.session_lifetime));
    response.headers.emplace_back("Set-Cookie", cookie_text(request, login_cookie, "", "/console/login", std::chrono::seconds(0)));
    return response;
  }

  std::optional<session> current_session(const http_request& request) {
    const auto cookie = cookie_value(request, session_cookie);
    if (!cookie) return std::nullopt;
    auto lease = parts.connections.checkout();
    pqxx::read_transaction tx(lease.connection());
    return find_session(tx, *cookie);
  }

  http_response sign_out(const http_request& request) {
    if (const auto cookie = cookie_value(request, session_cookie)) {
      auto lease = parts.connections.checkout();
      pqxx::work tx(lease.connection());
      close_session(tx, *cookie);
      tx.commit();
    }
    http_response response = redirect("/console/login");
    response.headers.emplace_back("Set-Cookie", cookie_text(request, session_cookie, "", "/console", std::chrono::seconds(0)));
    return response;
  }

  page_result provider_page(const page_context& context, std::string_view path) {
    for (const service::admin_page& page : pages) {
      if (page.path != path) continue;
      const bool post = context.method == "POST";
      const auto& call = post ? page.act : page.render;
      if (!call) return error_page(405, page.title, "This page takes no " + std::string(context.method) + ".");
      service::admin_request asked{context.who.operator_name, std::string(context.method), context.fields,
                                   context.csrf_input()};
      service::admin_answer answer = call(asked);
      for (const service::admin_audit& row : answer.audited) context.audit(row.tenant, row.action, row.subject);
      page_result result{answer.status, page.title, std::move(answer.body_html), {}};
      if (!answer.redirect.empty()) result.redirect = "/console/" + answer.redirect;
      return result;
    }
    return error_page(404, "Not found", "No such page.");
  }

  // The page for a signed-in operator's request.
  page_result route(const page_context& context) {
    const std::string_view path = context.path;
    const bool post = context.method == "POST";
    if (path.starts_with("/p/")) return provider_page(context, path.substr(3));
    if (!post) {
      if (path == "/") return overview_page(context);
      if (path == "/jobs") return jobs_page(context);
      if (path == "/jobs/confirm") return jobs_confirm_page(context);
      if (path == "/audit") return audit_page(context);
      if (path == "/reconcile") return reconcile_page(context);
    } else if (path == "/jobs/bulk") {
      return jobs_bulk_change(context);
    }
    if (path.starts_with("/jobs/")) {
      std::string_view rest = path.substr(6);
      const std::size_t slash = rest.find('/');
      const auto id = parse_id(rest.substr(0, slash));
      if (!id) return error_page(404, "Not found", "No such job.");
      const std::string_view action = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
      if (action.empty() && !post) return job_page(context, *id);
      if ((action == "/retry" || action == "/cancel") && post) return job_change(context, *id, action == "/retry");
    }
    return error_page(404, "Not found", "No such page.");
  }

  // The whole answer to a request under /console, on a DB thread.
  http_response answer(const http_request& request) {
    const std::string_view path = std::string_view(request.path).substr(prefix.size());
    const bool post = request.method == "POST";
    const std::size_t query_at = request.target.find('?');
    const auto fields = service::parse_form(post ? std::string_view(request.body)
                                                 : query_at == std::string::npos ? std::string_view{}
                                                                                 : std::string_view(request.target).substr(query_at + 1));
    if (path == "/login") {
      if (post && fields) return login(request, *fields);
      return login_page(request, post ? 400 : 200, post ? "The form was malformed." : "");
    }
    const std::optional<session> who = current_session(request);
    if (!who) return redirect("/console/login");
    const auto render = [&](const page_result& result) {
      if (!result.redirect.empty()) return redirect(result.redirect);
      return html_response(result.status, render_page(result.title, who->operator_name, links, who->csrf_token, result.body_html));
    };
    if (!fields) return render(error_page(400, "Bad request", "The query or form is malformed (a bad %-escape)."));
    if (post) {
      std::string_view sent;
      for (const auto& [key, value] : *fields) {
        if (key == "csrf") sent = value;
      }
      if (!tokens_equal(sent, who->csrf_token)) {
        return render(error_page(403, "Forbidden", "The form's CSRF token is missing or stale; reload the page and try again."));
      }
      if (path == "/logout") return sign_out(request);
    }
    const page_context context{parts.connections, parts.keys, parts.jobs, *who, request.method, path, *fields, pages};
    return render(route(context));
  }
};

console::console(console_parts parts, console_settings settings, std::vector<service::admin_page> pages)
    : state_(std::make_unique<state>(parts, settings, std::move(pages))) {}

console::~console() = default;

asio::awaitable<http_response> console::handle(http_request request) {
  if (request.path == "/" || request.path == prefix) co_return redirect("/console/");
  if (request.path == stylesheet_path) {
    co_return with_headers(http_response{200, "text/css; charset=utf-8", std::string(stylesheet()), {}});
  }
  state* self = state_.get();
  // Captured by pointer only, like every run_blocking call: GCC 12 copies a co_await operand's
  // lambda bitwise into run_blocking's frame, so a capture with a destructor (a string, a
  // shared_ptr) is destroyed twice (ASan: bad-free in the pool thread). The request lives in this
  // frame, which waits for the call to end.
  const http_request* asked = &request;
  co_return co_await queue::run_blocking(self->parts.blocking, [self, asked]() {
    try {
      return self->answer(*asked);
    } catch (const std::exception&) {
      // A database failure or a failed audit append: the operator sees no data, and the reason
      // stays out of the page (it could carry tenant data).
      return html_response(500, render_page("Error", {}, {}, {}, "<p class=\"error\">The console could not answer "
                                                                 "(database unavailable, or the audit row could not be "
                                                                 "written); nothing was shown or changed.</p>"));
    }
  });
}

std::vector<http_route> console::routes() {
  std::vector<http_route> routes;
  for (const char* method : {"GET", "POST"}) {
    routes.push_back({method, "/console", true, [this](http_request request) { return handle(std::move(request)); }});
  }
  routes.push_back({"GET", "/", false, [this](http_request request) { return handle(std::move(request)); }});
  return routes;
}

}  // namespace bankworker::console
