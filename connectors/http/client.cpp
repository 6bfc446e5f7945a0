#include "connectors/http/client.hpp"

#include <curl/curl.h>
#include <sodium.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/assert.hpp"

namespace bankworker::connectors::http {

namespace {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

// libcurl before 7.84 is not thread-safe in curl_global_init; doing it once, here, covers every
// process that makes calls (main, tests, benchmarks) without each remembering to.
void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw std::runtime_error("curl_global_init failed");
  });
}

bool is_ascii_digit(char c) noexcept { return c >= '0' && c <= '9'; }

char lower_ascii(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool starts_with_no_case(std::string_view text, std::string_view prefix) noexcept {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (lower_ascii(text[i]) != prefix[i]) return false;
  }
  return true;
}

// An IPv4 literal of four decimal parts (0–255) whose first part is 127.
bool is_loopback_ipv4(std::string_view host) noexcept {
  int parts = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = host.find('.', start);
    const std::string_view part = host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty() || part.size() > 3) return false;
    int value = 0;
    for (const char c : part) {
      if (!is_ascii_digit(c)) return false;
      value = value * 10 + (c - '0');
    }
    if (value > 255) return false;
    if (parts == 0 && value != 127) return false;
    ++parts;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts == 4;
}

bool is_port(std::string_view text) noexcept {
  if (text.empty() || text.size() > 5) return false;
  int value = 0;
  for (const char c : text) {
    if (!is_ascii_digit(c)) return false;
    value = value * 10 + (c - '0');
  }
  return value > 0 && value <= 65535;
}

// A guarded scratch buffer for a sensitive response while it arrives: sodium_malloc memory (guard
// pages, locked), zeroed by sodium_free. Copied into an exactly sized secret when complete.
class guarded_scratch {
 public:
  explicit guarded_scratch(std::size_t capacity)
      : bytes_(static_cast<unsigned char*>(sodium_malloc(capacity))), capacity_(capacity) {
    if (bytes_ == nullptr) throw std::bad_alloc();
  }
  guarded_scratch(const guarded_scratch&) = delete;
  guarded_scratch& operator=(const guarded_scratch&) = delete;
  ~guarded_scratch() { sodium_free(bytes_); }

  bool append(const char* data, std::size_t size) noexcept {
    if (size > capacity_ - size_) return false;
    std::memcpy(bytes_ + size_, data, size);
    size_ += size;
    return true;
  }
  crypto::secret to_secret() const {
    return crypto::secret::filled(size_, [this](unsigned char* out) {
      std::memcpy(out, bytes_, size_);
      return true;
    });
  }

 private:
  unsigned char* bytes_;
  std::size_t capacity_;
  std::size_t size_ = 0;
};

// The caller's completion handler, type-erased (Boost 1.81 has no any_completion_handler). It is
// always invoked through a post to the handler's own executor, never inside a libcurl callback or
// on the client's strand, and it keeps that executor's work count up until then.
class completion {
 public:
  virtual ~completion() = default;
  virtual void complete(response result) = 0;
};

template <class Handler>
class completion_of final : public completion {
 public:
  completion_of(Handler handler, asio::any_io_executor fallback)
      : handler_(std::move(handler)),
        work_(asio::prefer(asio::get_associated_executor(handler_, fallback),
                           asio::execution::outstanding_work.tracked)) {}

  void complete(response result) override {
    asio::any_io_executor work = std::move(work_);
    asio::post(work, [handler = std::move(handler_), result = std::move(result)]() mutable {
      std::move(handler)(std::move(result));
    });
  }

 private:
  Handler handler_;
  asio::any_io_executor work_;
};

// One call: the easy handle and everything libcurl points into while the transfer runs.
struct transfer {
  request call;
  std::unique_ptr<completion> done;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  // Keeps the body's pages readable for as long as libcurl may read them (CURLOPT_POSTFIELDS).
  std::optional<crypto::secret::view> body_view;
  // The bearer token, NUL-terminated in guarded memory while libcurl copies it (configure()).
  crypto::secret bearer_text;
  std::optional<guarded_scratch> sensitive;
  response result;
  std::size_t body_bytes_max = 0;
  bool over_cap = false;
  clock::time_point started{};

  ~transfer() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

}  // namespace

struct client::state : std::enable_shared_from_this<client::state> {
  // A socket libcurl asked us to watch: a dup of its descriptor (ours to close; libcurl closes
  // its own), and which directions libcurl wants.
  struct watcher {
    asio::posix::stream_descriptor descriptor;
    int wanted = CURL_POLL_NONE;
    bool reading = false;
    bool writing = false;
    std::uint64_t generation = 0;
  };

  state(asio::io_context& io_context, client_settings client_settings)
      : io(io_context), strand(asio::make_strand(io_context)), settings(std::move(client_settings)), timer(io_context) {}

  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> strand;
  const client_settings settings;
  asio::steady_timer timer;
  // Serialises the destructor's clean-up with handlers still running on the strand.
  std::mutex mutex;
  CURLM* multi = nullptr;
  std::atomic<bool> stopped{false};
  std::unordered_map<CURL*, std::unique_ptr<transfer>> running;
  std::deque<std::unique_ptr<transfer>> waiting;
  std::map<curl_socket_t, std::unique_ptr<watcher>> sockets;
  std::uint64_t next_generation = 1;

  void start(std::unique_ptr<transfer> call);
  void admit(std::unique_ptr<transfer> call);
  void stop_all();
  void clean_up();
  void on_socket(curl_socket_t socket, int what);
  void arm(curl_socket_t socket, watcher& watch);
  void on_ready(curl_socket_t socket, std::uint64_t generation, int direction, boost::system::error_code error);
  void on_timer(int timeout_ms);
  void act(curl_socket_t socket, int select);
  void collect_finished();
  void finish(std::unique_ptr<transfer> call, CURLcode code);

  static int socket_callback(CURL*, curl_socket_t socket, int what, void* user, void*) {
    static_cast<state*>(user)->on_socket(socket, what);
    return 0;
  }
  static int timer_callback(CURLM*, long timeout_ms, void* user) {
    static_cast<state*>(user)->on_timer(static_cast<int>(timeout_ms));
    return 0;
  }
};

namespace {

failure failure_of(CURLcode code) noexcept {
  switch (code) {
    case CURLE_OK:
      return failure::none;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return failure::refused_url;
    case CURLE_OPERATION_TIMEDOUT:
      return failure::timeout;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
      return failure::connect;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
      return failure::tls;
    case CURLE_FILESIZE_EXCEEDED:
      return failure::too_large;
    case CURLE_ABORTED_BY_CALLBACK:
      return failure::cancelled;
    default:
      // Partial file, receive or send errors, an empty reply, HTTP/1 framing errors: the
      // connection broke while the call was under way.
      return failure::transfer;
  }
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* call = static_cast<transfer*>(user);
  const std::size_t bytes = size * count;
  if (bytes > call->body_bytes_max - call->result.bytes_received) {
    call->over_cap = true;
    return 0;  // libcurl fails the transfer with CURLE_WRITE_ERROR
  }
  if (call->sensitive) {
    if (!call->sensitive->append(data, bytes)) {
      call->over_cap = true;
      return 0;
    }
  } else {
    call->result.body.append(data, bytes);
  }
  call->result.bytes_received += bytes;
  return bytes;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* call = static_cast<transfer*>(user);
  const std::size_t bytes = size * count;
  const std::string_view line(data, bytes);
  // A new status line (after a 100 Continue, say) starts a new set of headers.
  if (line.starts_with("HTTP/")) call->result.retry_after.clear();
  constexpr std::string_view name = "retry-after:";
  if (starts_with_no_case(line, name)) {
    std::string_view value = line.substr(name.size());
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
    call->result.retry_after = std::string(value.substr(0, 64));
  }
  // One allocation for the whole body instead of a doubling string copied at every growth; a
  // length past the cap is not reserved (the transfer fails at the cap anyway).
  constexpr std::string_view length_name = "content-length:";
  if (!call->sensitive && starts_with_no_case(line, length_name)) {
    std::string_view value = line.substr(length_name.size());
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    std::size_t length = 0;
    const auto parsed = std::from_chars(value.data(), value.data() + value.size(), length);
    if (parsed.ec == std::errc() && length <= call->body_bytes_max) {
      call->result.body.reserve(length + body_padding_bytes);
    }
  }
  return bytes;
}

// Sets an option whose failure would be a bug of ours or a libcurl built without the feature;
// either way the call must not go out with weaker settings than we asked for.
template <class Value>
void set_option(CURL* easy, CURLoption option, Value value) {
  if (curl_easy_setopt(easy, option, value) != CURLE_OK) {
    throw std::runtime_error("curl_easy_setopt failed for option " + std::to_string(static_cast<int>(option)));
  }
}

void configure(transfer& call, const client_settings& settings) {
  CURL* easy = call.easy;
  const std::chrono::milliseconds timeout = call.call.timeout.count() > 0 ? call.call.timeout : settings.request_timeout;
  set_option(easy, CURLOPT_URL, call.call.url.c_str());
  set_option(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  set_option(easy, CURLOPT_FOLLOWLOCATION, 0L);
  set_option(easy, CURLOPT_NOPROXY, "*");
  set_option(easy, CURLOPT_NOSIGNAL, 1L);
  set_option(easy, CURLOPT_SSL_VERIFYPEER, 1L);
  set_option(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  set_option(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  set_option(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  set_option(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min(settings.connect_timeout, timeout).count()));
  set_option(easy, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(call.body_bytes_max));
  set_option(easy, CURLOPT_USERAGENT, settings.user_agent.c_str());
  set_option(easy, CURLOPT_PRIVATE, static_cast<void*>(&call));
  set_option(easy, CURLOPT_WRITEFUNCTION, &on_body);
  set_option(easy, CURLOPT_WRITEDATA, static_cast<void*>(&call));
  set_option(easy, CURLOPT_HEADERFUNCTION, &on_header);
  set_option(easy, CURLOPT_HEADERDATA, static_cast<void*>(&call));

  for (const auto& [name, value] : call.call.headers) {
    const std::string line = name + ": " + value;
    curl_slist* appended = curl_slist_append(call.headers, line.c_str());
    if (appended == nullptr) throw std::bad_alloc();
    call.headers = appended;
  }
  // No "Expect: 100-continue" round trip: our bodies are small and the servers answer at once.
  curl_slist* appended = curl_slist_append(call.headers, "Expect:");
  if (appended == nullptr) throw std::bad_alloc();
  call.headers = appended;
  set_option(easy, CURLOPT_HTTPHEADER, call.headers);

  if (!call.call.bearer_token.empty()) {
    // libcurl wants a C string and copies it at once (client.hpp: the residual copy); the
    // terminated text we hand it lives in guarded memory and is zeroed with the transfer.
    call.bearer_text = crypto::secret::filled(call.call.bearer_token.size() + 1, [&](unsigned char* out) {
      const crypto::secret::view token = call.call.bearer_token.reveal();
      std::memcpy(out, token.data(), token.size());
      out[token.size()] = 0;
      return true;
    });
    const crypto::secret::view text = call.bearer_text.reveal();
    set_option(easy, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BEARER));
    set_option(easy, CURLOPT_XOAUTH2_BEARER, reinterpret_cast<const char*>(text.data()));
  }

  const std::string& method = call.call.method;
  if (method == "GET") {
    set_option(easy, CURLOPT_HTTPGET, 1L);
  } else {
    if (method != "POST") set_option(easy, CURLOPT_CUSTOMREQUEST, method.c_str());
    call.body_view.emplace(call.call.body.reveal());
    // libcurl reads the body straight from the guarded pages, which the view keeps open until
    // the transfer is over; it never copies it (CURLOPT_COPYPOSTFIELDS would).
    static constexpr char empty_body[] = "";
    const char* bytes = call.body_view->empty() ? empty_body : call.body_view->text().data();
    set_option(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body_view->size()));
    set_option(easy, CURLOPT_POSTFIELDS, bytes);
  }
}

}  // namespace

bool failure_is_permanent(failure value) noexcept {
  switch (value) {
    case failure::refused_url:
    case failure::tls:
    case failure::too_large:
      return true;
    case failure::none:
    case failure::timeout:
    case failure::connect:
    case failure::transfer:
    case failure::cancelled:
      return false;
  }
  return false;
}

call_record call_record_of(std::string endpoint, const response& answer) {
  call_record record;
  record.endpoint = std::move(endpoint);
  record.http_status = answer.status;
  record.bytes_sent = answer.bytes_sent;
  record.bytes_received = answer.bytes_received;
  record.latency = answer.latency;
  return record;
}

std::chrono::milliseconds retry_after_delay(std::string_view header, std::chrono::seconds cap) noexcept {
  if (header.empty() || header.size() > 9) return std::chrono::milliseconds(0);
  std::int64_t seconds = 0;
  for (const char c : header) {
    if (!is_ascii_digit(c)) return std::chrono::milliseconds(0);
    seconds = seconds * 10 + (c - '0');
  }
  return std::chrono::seconds(std::min<std::int64_t>(seconds, cap.count()));
}

void client::state::start(std::unique_ptr<transfer> call) {
  // Runs on the strand.
  std::lock_guard lock(mutex);
  if (stopped || multi == nullptr) {
    call->result.error = failure::cancelled;
    call->result.error_text = "the HTTP client is shut down";
    call->done->complete(std::move(call->result));
    return;
  }
  if (running.size() >= settings.calls_in_flight_max) {
    waiting.push_back(std::move(call));
    return;
  }
  admit(std::move(call));
}

void client::state::admit(std::unique_ptr<transfer> call) {
  CURL* easy = call->easy;
  running.emplace(easy, std::move(call));
  if (curl_multi_add_handle(multi, easy) != CURLM_OK) {
    auto node = running.extract(easy);
    finish(std::move(node.mapped()), CURLE_FAILED_INIT);
  }
}

void client::state::finish(std::unique_ptr<transfer> call, CURLcode code) {
  response& result = call->result;
  result.latency = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - call->started);
  if (call->easy != nullptr) {
    curl_multi_remove_handle(multi, call->easy);
    long status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_off_t uploaded = 0;
    curl_easy_getinfo(call->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
    result.bytes_sent = static_cast<std::uint64_t>(uploaded);
    if (code == CURLE_OK) result.status = status;
  }
  if (code != CURLE_OK) {
    result.error = call->over_cap && code == CURLE_WRITE_ERROR ? failure::too_large : failure_of(code);
    result.error_text = result.error == failure::too_large
                            ? "response body larger than " + std::to_string(call->body_bytes_max) + " bytes"
                            : curl_easy_strerror(code);
    result.body.clear();
  } else if (call->sensitive) {
    result.secret_body = call->sensitive->to_secret();
  }
  // The body may be released (and zeroed by its owner) now that libcurl is done with it.
  call->body_view.reset();
  call->sensitive.reset();
  std::unique_ptr<completion> done = std::move(call->done);
  response out = std::move(result);
  call.reset();
  done->complete(std::move(out));
  // A slot is free: the oldest waiting call goes next.
  while (!waiting.empty() && running.size() < settings.calls_in_flight_max && !stopped) {
    std::unique_ptr<transfer> next = std::move(waiting.front());
    waiting.pop_front();
    admit(std::move(next));
  }
}

void client::state::collect_finished() {
  int left = 0;
  while (CURLMsg* message = curl_multi_info_read(multi, &left)) {
    if (message->msg != CURLMSG_DONE) continue;
    auto node = running.extract(message->easy_handle);
    BW_ASSERT(!node.empty());
    if (node.empty()) continue;
    finish(std::move(node.mapped()), message->data.result);
  }
}

void client::state::act(curl_socket_t socket, int select) {
  int still_running = 0;
  curl_multi_socket_action(multi, socket, select, &still_running);
  collect_finished();
}

void client::state::on_socket(curl_socket_t socket, int what) {
  // Called by libcurl from inside curl_multi_* calls, so on the strand with the mutex held.
  if (what == CURL_POLL_REMOVE) {
    sockets.erase(socket);  // closes our dup; pending waits complete with operation_aborted
    return;
  }
  auto found = sockets.find(socket);
  if (found == sockets.end()) {
    // Close-on-exec, like libcurl's own socket: a child process must not keep the connection open.
    const int copy = ::fcntl(socket, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return;  // the transfer times out; nothing better to do without a descriptor
    auto watch = std::make_unique<watcher>(watcher{asio::posix::stream_descriptor(io, copy), CURL_POLL_NONE, false,
                                                    false, next_generation++});
    found = sockets.emplace(socket, std::move(watch)).first;
  }
  found->second->wanted = what;
  arm(socket, *found->second);
}

void client::state::arm(curl_socket_t socket, watcher& watch) {
  auto self = shared_from_this();
  if ((watch.wanted & CURL_POLL_IN) != 0 && !watch.reading) {
    watch.reading = true;
    watch.descriptor.async_wait(asio::posix::stream_descriptor::wait_read,
                                asio::bind_executor(strand, [self, socket, generation = watch.generation](auto error) {
                                  self->on_ready(socket, generation, CURL_CSELECT_IN, error);
                                }));
  }
  if ((watch.wanted & CURL_POLL_OUT) != 0 && !watch.writing) {
    watch.writing = true;
    watch.descriptor.async_wait(asio::posix::stream_descriptor::wait_write,
                                asio::bind_executor(strand, [self, socket, generation = watch.generation](auto error) {
                                  self->on_ready(socket, generation, CURL_CSELECT_OUT, error);
                                }));
  }
}

void client::state::on_ready(curl_socket_t socket, std::uint64_t generation, int direction,
                             boost::system::error_code error) {
  std::lock_guard lock(mutex);
  if (multi == nullptr) return;
  auto found = sockets.find(socket);
  // The socket was removed (and perhaps its number reused) since this wait began.
  if (found == sockets.end() || found->second->generation != generation) return;
  watcher& watch = *found->second;
  (direction == CURL_CSELECT_IN ? watch.reading : watch.writing) = false;
  if (error == asio::error::operation_aborted) return;
  act(socket, error ? CURL_CSELECT_ERR : direction);
  // libcurl may have removed or changed the socket meanwhile; wait again if it still wants this.
  found = sockets.find(socket);
  if (found != sockets.end() && found->second->generation == generation) arm(socket, *found->second);
}

void client::state::on_timer(int timeout_ms) {
  // Called by libcurl from inside curl_multi_* calls, so on the strand with the mutex held.
  if (timeout_ms < 0) {
    timer.cancel();
    return;
  }
  timer.expires_after(std::chrono::milliseconds(timeout_ms));
  timer.async_wait(asio::bind_executor(strand, [self = shared_from_this()](boost::system::error_code error) {
    if (error == asio::error::operation_aborted) return;
    std::lock_guard lock(self->mutex);
    if (self->multi == nullptr) return;
    self->act(CURL_SOCKET_TIMEOUT, 0);
  }));
}

void client::state::stop_all() {
  // With the mutex held.
  stopped = true;
  std::deque<std::unique_ptr<transfer>> cancelled = std::move(waiting);
  waiting.clear();
  for (auto& [easy, call] : running) cancelled.push_back(std::move(call));
  running.clear();
  for (auto& call : cancelled) {
    if (call->easy != nullptr && multi != nullptr) curl_multi_remove_handle(multi, call->easy);
    call->body_view.reset();
    call->sensitive.reset();
    response result;
    result.error = failure::cancelled;
    result.error_text = "the HTTP client is shut down";
    result.latency = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - call->started);
    call->done->complete(std::move(result));
  }
  timer.cancel();
}

void client::state::clean_up() {
  // With the mutex held; the client is going away.
  stop_all();
  if (multi != nullptr) {
    curl_multi_cleanup(multi);  // closes cached connections, reporting their sockets removed
    multi = nullptr;
  }
  sockets.clear();
}

client::client(boost::asio::io_context& io, client_settings settings)
    : state_(std::make_shared<state>(io, std::move(settings))) {
  init_curl_once();
  BW_ASSERT(state_->settings.calls_in_flight_max > 0);
  state_->multi = curl_multi_init();
  if (state_->multi == nullptr) throw std::runtime_error("curl_multi_init failed");
  CURLM* multi = state_->multi;
  const auto check = [](CURLMcode code) {
    if (code != CURLM_OK) throw std::runtime_error(std::string("curl_multi_setopt: ") + curl_multi_strerror(code));
  };
  check(curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &state::socket_callback));
  check(curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, static_cast<void*>(state_.get())));
  check(curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &state::timer_callback));
  check(curl_multi_setopt(multi, CURLMOPT_TIMERDATA, static_cast<void*>(state_.get())));
  check(curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(state_->settings.connections_per_host_max)));
  // Idle connections kept for reuse: enough for every host's share.
  check(curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, static_cast<long>(state_->settings.connections_per_host_max * 4)));
}

client::~client() {
  std::lock_guard lock(state_->mutex);
  state_->clean_up();
}

void client::shutdown() {
  if (state_->stopped.exchange(true)) return;
  asio::post(state_->strand, [self = state_] {
    std::lock_guard lock(self->mutex);
    self->stop_all();
  });
}

boost::asio::awaitable<response> client::perform(request call) {
  if (!url_allowed(call.url)) {
    response refused;
    refused.error = failure::refused_url;
    refused.error_text = "URL not allowed (https, or http to a loopback literal only)";
    co_return refused;
  }
  if (call.body.size() > state_->settings.request_bytes_max) {
    response refused;
    refused.error = failure::too_large;
    refused.error_text = "request body larger than request_bytes_max (" +
                         std::to_string(state_->settings.request_bytes_max) + " bytes)";
    co_return refused;
  }
  auto one = std::make_unique<transfer>();
  one->body_bytes_max =
      call.sensitive_response ? std::min(sensitive_response_bytes_max, state_->settings.response_bytes_max)
                              : state_->settings.response_bytes_max;
  if (call.sensitive_response) one->sensitive.emplace(one->body_bytes_max);
  one->call = std::move(call);
  one->started = clock::now();
  // The easy handle is set up here, off the strand, so a failure throws to the caller.
  one->easy = curl_easy_init();
  if (one->easy == nullptr) throw std::bad_alloc();
  configure(*one, state_->settings);
  // GCC 12 destroys some temporaries of a co_await full-expression twice, so nothing with a
  // destructor is built inside it: the initiation holds a plain pointer, the operation is named.
  state* raw = state_.get();
  auto initiation = [raw](auto handler, std::unique_ptr<transfer> pending) {
    pending->done = std::make_unique<completion_of<decltype(handler)>>(std::move(handler), raw->io.get_executor());
    asio::post(raw->strand, [self = raw->shared_from_this(), pending = std::move(pending)]() mutable {
      self->start(std::move(pending));
    });
  };
  auto operation = asio::async_initiate<const asio::use_awaitable_t<>, void(response)>(initiation, asio::use_awaitable,
                                                                                       std::move(one));
  response result = co_await std::move(operation);
  co_return result;
}

bool client::url_allowed(std::string_view url) noexcept {
  for (const char c : url) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f) return false;  // no spaces, controls or raw non-ASCII
  }
  std::string_view rest;
  bool secure = false;
  if (starts_with_no_case(url, "https://")) {
    rest = url.substr(8);
    secure = true;
  } else if (starts_with_no_case(url, "http://")) {
    rest = url.substr(7);
  } else {
    return false;
  }
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty()) return false;
  // Credentials in the URL would end up in logs.
  if (authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  std::string_view port;
  if (host.front() == '[') {
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    port = host.substr(close + 1);
    host = host.substr(0, close + 1);
    if (!port.empty()) {
      if (port.front() != ':') return false;
      port.remove_prefix(1);
      if (!is_port(port)) return false;
    }
    return secure || host == "[::1]";
  }
  const std::size_t colon = host.find(':');
  if (colon != std::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
    if (!is_port(port)) return false;
  }
  if (host.empty()) return false;
  return secure || is_loopback_ipv4(host);
}

}  // namespace bankworker::connectors::http
