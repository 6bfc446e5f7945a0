#pragma once
// The operator console (issue #22), served by `bankworker run` on the admin address under
// /console: server-rendered HTML, no script, every page behind an operator's session.
//
// What it owns: signing in and out (console/auth.hpp), the CSRF check of every POST, the
// security headers and layout (console/html.hpp), the generic pages (overview, jobs, audit
// chain), and the audit rows. The providers' pages (service/admin_page.hpp) are wrapped the same way.
//
// Rules every page keeps:
//   - a GET changes nothing but the audit chain; every change is a POST whose form carries the
//     session's CSRF token (missing or stale: 403);
//   - a page or action that shows or changes one tenant's data appends a row (actor
//     "operator:NAME", what, when) to that tenant's audit chain before the page is answered; if
//     the append fails the operator gets a 500 and not the data (for the console's own actions,
//     retry and cancel, the row is appended before the change; a provider's action names its
//     tenants only in its answer, so its row follows the change);
//   - unknown ids are 404, malformed filters 400 with the reason on the page; no session (or an
//     expired one) is sent to the login page.

#include <chrono>
#include <memory>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "console/auth.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "queue/queue.hpp"
#include "service/admin_page.hpp"
#include "service/http.hpp"

namespace bankworker::console {

struct console_settings {
  std::chrono::seconds session_lifetime{8 * 3600};
  login_limits login;
};

// What the console uses; all outlive it.
struct console_parts {
  boost::asio::thread_pool& blocking;  // the DB thread pool: every page's work runs there
  db::pool& connections;
  const db::key_store& keys;
  queue::job_queue& jobs;
};

class console {
 public:
  console(console_parts parts, console_settings settings, std::vector<service::admin_page> pages);
  ~console();
  console(const console&) = delete;
  console& operator=(const console&) = delete;

  // GET and POST under /console, and GET / (to the overview). The routes refer to this object,
  // which must outlive the server that serves them.
  std::vector<service::http_route> routes();

  // One request, as the routes answer it (tests call it directly too).
  boost::asio::awaitable<service::http_response> handle(service::http_request request);

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace bankworker::console
