#include "libs/common/admin_http.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/common/json_log.h"
#include "prometheus/text_serializer.h"

namespace switchboard {
namespace {

constexpr size_t kMaxBodyBytes = 4 << 20;

const char* StatusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

std::string UrlDecode(absl::string_view in) {
  std::string out(in.size() + 1, '\0');
  int n = mg_url_decode(in.data(), static_cast<int>(in.size()), out.data(),
                        static_cast<int>(out.size()), /*is_form_url_encoded=*/1);
  out.resize(n < 0 ? 0 : n);
  return out;
}

std::string StatusCodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

absl::Status CheckJsonNesting(absl::string_view body, int max_depth) {
  int depth = 0;
  // protobuf's JSON parser also accepts single-quoted strings: a quote of
  // either kind opens a string that only the same kind closes.
  char quote = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (quote != 0) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == quote) {
        quote = 0;
      }
      continue;
    }
    switch (c) {
      case '"':
      case '\'':
        quote = c;
        break;
      case '{':
      case '[':
        if (++depth > max_depth) {
          return absl::InvalidArgumentError(absl::StrCat("body: JSON nested deeper than ",
                                                         max_depth, " levels (at byte ", i, ")"));
        }
        break;
      case '}':
      case ']':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  if (quote != 0) return absl::InvalidArgumentError("body: JSON string not terminated");
  return absl::OkStatus();
}

HttpResponse ErrorResponse(const absl::Status& status) {
  std::string code = StatusCodeName(status.code());
  // absl names codes "INVALID_ARGUMENT"-style only through this mapping.
  for (char& c : code) c = (c == ' ') ? '_' : static_cast<char>(toupper(c));
  HttpResponse r;
  r.status = HttpStatusFor(status.code());
  r.body = absl::StrCat("{\"error\":{\"code\":", JsonQuote(code),
                        ",\"message\":", JsonQuote(status.message()), "}}");
  return r;
}

AdminHttpServer::AdminHttpServer(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  PublicRoute("GET", "/metrics", [this](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    if (before_scrape_) before_scrape_();
    r.body = prometheus::TextSerializer().Serialize(registry_->Collect());
    return r;
  });
  PublicRoute("GET", "/healthz", [](const HttpRequest&) {
    return HttpResponse{200, "application/json", "{\"status\":\"ok\"}"};
  });
  PublicRoute("GET", "/readyz", [this](const HttpRequest&) {
    bool ready = !ready_ || ready_();
    return HttpResponse{ready ? 200 : 503, "application/json",
                        ready ? "{\"status\":\"ready\"}" : "{\"status\":\"not ready\"}"};
  });
}

AdminHttpServer::~AdminHttpServer() { Stop(); }

void AdminHttpServer::Route(const std::string& method, const std::string& path,
                            HttpHandler handler) {
  bool prefix = !path.empty() && path.back() == '/' && path.size() > 1;
  routes_.push_back(RouteEntry{method, path, prefix, std::move(handler), std::nullopt});
}

void AdminHttpServer::Route(const std::string& method, const std::string& path, Scope::Kind scope,
                            HttpHandler handler) {
  Route(method, path, std::move(handler));
  routes_.back().scope = scope;
}

void AdminHttpServer::PublicRoute(const std::string& method, const std::string& path,
                                  HttpHandler handler) {
  Route(method, path, std::move(handler));
  routes_.back().open = true;
}

void AdminHttpServer::StreamRoute(const std::string& method, const std::string& path,
                                  Scope::Kind scope, int max_streams, bool query_token,
                                  StreamHandler handler) {
  Route(method, path, scope, nullptr);
  RouteEntry& r = routes_.back();
  r.stream = std::move(handler);
  r.max_streams = max_streams;
  r.query_token = query_token;
  r.active = std::make_shared<std::atomic<int>>(0);
}

const AdminHttpServer::RouteEntry* AdminHttpServer::Resolve(HttpRequest& req,
                                                            HttpResponse* refusal) const {
  const RouteEntry* best = nullptr;
  bool path_matched = false;
  for (const RouteEntry& r : routes_) {
    bool match = r.prefix ? absl::StartsWith(req.path, r.path) : req.path == r.path;
    if (!match) continue;
    path_matched = true;
    if (r.method != req.method) continue;
    if (best == nullptr || (best->prefix && !r.prefix) ||
        (best->prefix && r.prefix && r.path.size() > best->path.size())) {
      best = &r;
    }
  }
  if (best == nullptr) {
    *refusal =
        ErrorResponse(path_matched ? absl::InvalidArgumentError(absl::StrCat(
                                         "method ", req.method, " is not allowed on ", req.path))
                                   : absl::NotFoundError(absl::StrCat("no route for ", req.path)));
    return nullptr;
  }
  if (auth_ == nullptr || best->open) {
    req.caller = Principal::Anonymous();
    return best;
  }
  Credentials credentials;
  auto header = req.headers.find("authorization");
  if (header != req.headers.end()) {
    credentials.authorization = header->second;
  } else if (auto token = req.query.find("access_token");
             best->query_token && token != req.query.end()) {
    credentials.authorization = absl::StrCat("Bearer ", token->second);
  }
  // Behind the TLS terminator: the client certificate of the connection it
  // relays from this port (only its own loopback connections are known).
  if (tls_ != nullptr && req.remote_addr == "127.0.0.1") {
    credentials.tls_identities = tls_->PeerIdentities(req.remote_port);
  }
  absl::StatusOr<Principal> caller =
      auth_->Authenticate(credentials, absl::StrCat(req.method, " ", best->path));
  if (!caller.ok()) {
    *refusal = ErrorResponse(caller.status());
    refusal->headers.emplace_back("WWW-Authenticate", "Bearer");
    return nullptr;
  }
  req.caller = *std::move(caller);
  if (best->scope.has_value()) {
    absl::Status allowed = auth_->Denied(RequireScope(req.caller, *best->scope),
                                         absl::StrCat(req.method, " ", best->path));
    if (!allowed.ok()) {
      *refusal = ErrorResponse(allowed);
      return nullptr;
    }
  }
  return best;
}

// One streamed response on a civetweb connection: chunked for HTTP/1.1, raw
// bytes up to the connection's close for HTTP/1.0 clients.
class AdminHttpServer::Stream : public HttpStream {
 public:
  Stream(mg_connection* conn, bool chunked) : conn_(conn), chunked_(chunked) {}

  bool Begin(int status, const std::string& content_type,
             const std::vector<std::pair<std::string, std::string>>& headers,
             int64_t content_length) override {
    if (Cancelled()) return false;  // unanswered: RunStream says 503
    began_ = true;
    const char* version = chunked_ ? "HTTP/1.1 " : "HTTP/1.0 ";
    if (content_length >= 0) chunked_ = false;
    std::string head =
        absl::StrCat(version, status, " ", StatusText(status), "\r\nContent-Type: ", content_type,
                     "\r\nCache-Control: no-store\r\n",
                     chunked_ ? "Transfer-Encoding: chunked\r\n" : "Connection: close\r\n");
    if (content_length >= 0) absl::StrAppend(&head, "Content-Length: ", content_length, "\r\n");
    for (const auto& [k, v] : headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
    head += "\r\n";
    return Sent(mg_write(conn_, head.data(), head.size()) == static_cast<int>(head.size()));
  }
  bool Write(absl::string_view bytes) override {
    if (bytes.empty()) return true;  // an empty chunk would end the response
    if (failed_ || Cancelled()) return false;
    if (!chunked_) {
      return Sent(mg_write(conn_, bytes.data(), bytes.size()) == static_cast<int>(bytes.size()));
    }
    return Sent(mg_send_chunk(conn_, bytes.data(), static_cast<unsigned>(bytes.size())) > 0);
  }
  bool Cancelled() const override {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }
  void OnCancel(std::function<void()> wake) override {
    // Under mu_, so that once this returns no earlier `wake` is running:
    // the handler unhooks its callback this way before what it captured goes.
    absl::MutexLock lock(&mu_);
    wake_ = std::move(wake);
    if (cancelled_ && wake_) wake_();
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (wake_) wake_();
  }
  // The last, empty chunk ends the response; the connection may be reused.
  // Not after a failed write: the connection may hold half a chunk.
  void End() {
    if (began_ && chunked_ && !failed_ && !Cancelled()) mg_send_chunk(conn_, "", 0);
  }
  bool began() const { return began_; }
  // HTTP/1.0, or a write failed: civetweb must not read another request.
  bool must_close() const { return !chunked_ || failed_; }

 private:
  bool Sent(bool ok) {
    failed_ = failed_ || !ok;
    return ok;
  }

  mg_connection* const conn_;
  bool chunked_;         // until Begin with a length; the handler's thread only
  bool began_ = false;   // the handler's thread only
  bool failed_ = false;  // the handler's thread only
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> wake_ ABSL_GUARDED_BY(mu_);
};

std::optional<HttpResponse> AdminHttpServer::RunStream(mg_connection* conn, const RouteEntry& route,
                                                       const HttpRequest& req) {
  if (route.active->fetch_add(1) >= route.max_streams) {
    route.active->fetch_sub(1);
    return ErrorResponse(absl::UnavailableError(
        absl::StrCat(req.path, ": ", route.max_streams, " streams are open already; retry later")));
  }
  const mg_request_info* info = mg_get_request_info(conn);
  bool http11 = info->http_version != nullptr && std::string(info->http_version) != "1.0";
  Stream stream(conn, http11);
  bool stopping;
  {
    absl::MutexLock lock(&streams_mu_);
    stopping = stopping_;
    streams_.insert(&stream);
  }
  if (stopping) stream.Cancel();
  std::optional<HttpResponse> answer = route.stream(req, &stream);
  {
    absl::MutexLock lock(&streams_mu_);
    streams_.erase(&stream);
  }
  if (!answer.has_value()) stream.End();
  route.active->fetch_sub(1);
  if (!answer.has_value() && !stream.began()) {
    answer = ErrorResponse(absl::UnavailableError("the server is stopping"));
  }
  // civetweb would otherwise read the next request from this connection.
  if (!answer.has_value() && stream.must_close()) mg_disable_connection_keep_alive(conn);
  return answer;
}

int AdminHttpServer::HandleRequest(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<AdminHttpServer*>(self_ptr);
  const mg_request_info* info = mg_get_request_info(conn);
  HttpRequest req;
  req.method = info->request_method ? info->request_method : "GET";
  req.path = info->local_uri ? info->local_uri : "/";
  req.remote_addr = info->remote_addr;
  req.remote_port = info->remote_port;
  if (info->query_string != nullptr) {
    for (absl::string_view kv : absl::StrSplit(info->query_string, '&', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> p =
          absl::StrSplit(kv, absl::MaxSplits('=', 1));
      req.query[UrlDecode(p.first)] = UrlDecode(p.second);
    }
  }
  for (int i = 0; i < info->num_headers; ++i) {
    std::string name = info->http_headers[i].name ? info->http_headers[i].name : "";
    for (char& c : name) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    req.headers[name] = info->http_headers[i].value ? info->http_headers[i].value : "";
  }
  HttpResponse resp;
  bool too_large = info->content_length > static_cast<long long>(kMaxBodyBytes);
  if (!too_large) {
    char buf[16384];
    int n;
    while ((n = mg_read(conn, buf, sizeof(buf))) > 0) {
      req.body.append(buf, n);
      if (req.body.size() > kMaxBodyBytes) {
        too_large = true;
        break;
      }
    }
  }
  absl::Status nesting = too_large ? absl::OkStatus() : CheckJsonNesting(req.body);
  if (too_large) {
    resp = ErrorResponse(
        absl::InvalidArgumentError(absl::StrCat("body: larger than ", kMaxBodyBytes, " bytes")));
    resp.status = 413;
  } else if (!nesting.ok()) {
    resp = ErrorResponse(nesting);
  } else {
    HttpResponse refusal;
    const RouteEntry* route = self->Resolve(req, &refusal);
    if (route == nullptr) {
      resp = std::move(refusal);
    } else if (route->stream) {
      std::optional<HttpResponse> plain = self->RunStream(conn, *route, req);
      if (!plain.has_value()) return 200;
      resp = *std::move(plain);
    } else {
      resp = route->handler(req);
    }
  }
  std::string head =
      absl::StrCat("HTTP/1.1 ", resp.status, " ", StatusText(resp.status),
                   "\r\nContent-Type: ", resp.content_type,
                   "\r\nContent-Length: ", resp.body.size(), "\r\nCache-Control: no-store\r\n");
  for (const auto& [k, v] : resp.headers) absl::StrAppend(&head, k, ": ", v, "\r\n");
  head += "\r\n";
  mg_write(conn, head.data(), head.size());
  if (!resp.body.empty() && req.method != "HEAD")
    mg_write(conn, resp.body.data(), resp.body.size());
  return resp.status;
}

absl::StatusOr<int> AdminHttpServer::Start(const std::string& addr, const ServerTlsConfig& tls) {
  if (ctx_ != nullptr) return absl::FailedPreconditionError("admin HTTP server already started");
  // With TLS civetweb listens on loopback only, behind the terminator.
  std::string listen = tls.enabled() ? "127.0.0.1:0" : addr;
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  // Every stream holds a thread of its own; worker_threads_ more serve
  // everything else.
  int threads = worker_threads_;
  for (const RouteEntry& r : routes_) threads += r.max_streams;
  std::string num_threads = absl::StrCat(threads);
  // request_timeout_ms also bounds each write: a stream whose reader took
  // nothing for 10 s is cut.
  const char* options[] = {"listening_ports",
                           listen.c_str(),
                           "num_threads",
                           num_threads.c_str(),
                           "request_timeout_ms",
                           "10000",
                           "enable_keep_alive",
                           "yes",
                           nullptr};
  ctx_ = mg_start(&callbacks, this, options);
  if (ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("http_addr: cannot listen on ", addr));
  }
  mg_set_request_handler(ctx_, "/", &AdminHttpServer::HandleRequest, this);
  mg_server_port ports[4];
  int n = mg_get_server_ports(ctx_, 4, ports);
  if (n < 1) return absl::InternalError("admin HTTP server has no listening port");
  if (!tls.enabled()) return ports[0].port;
  // Room for every stream and as many other connections besides.
  TlsTerminator::Options relay;
  relay.max_connections = 64 + (threads - 8);
  tls_ = std::make_unique<TlsTerminator>(tls, relay);
  return tls_->Start(addr, ports[0].port);
}

void AdminHttpServer::Stop() {
  {
    absl::MutexLock lock(&streams_mu_);
    stopping_ = true;
    for (Stream* s : streams_) s->Cancel();
  }
  if (tls_ != nullptr) tls_->Stop();
  if (ctx_ == nullptr) return;
  // civetweb's master thread notices the stop flag only when its poll()
  // returns, which by itself takes up to 2 s; poke the listening socket until
  // mg_stop() has returned so shutdown is prompt.
  mg_server_port ports[1];
  int n = mg_get_server_ports(ctx_, 1, ports);
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    if (n < 1) return;
    while (!stopped.load()) {
      int fd = socket(ports[0].protocol == 2 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
      if (ports[0].protocol == 2) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(ports[0].port);
        a.sin6_addr = in6addr_loopback;
        connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      } else {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(ports[0].port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      }
      close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  mg_stop(ctx_);
  stopped = true;
  waker.join();
  ctx_ = nullptr;
}

}  // namespace switchboard
