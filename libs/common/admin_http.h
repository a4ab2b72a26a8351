#ifndef SWITCHBOARD_LIBS_COMMON_ADMIN_HTTP_H_
#define SWITCHBOARD_LIBS_COMMON_ADMIN_HTTP_H_

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/auth.h"
#include "libs/security/tls.h"
#include "libs/security/tls_terminator.h"
#include "prometheus/registry.h"

struct mg_context;
struct mg_connection;

namespace switchboard {

struct HttpRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string remote_addr;
  int remote_port = 0;
  // Who is calling: set before any route runs (anonymous when
  // authentication is off); routes check its scopes.
  Principal caller;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// A response written as it is produced (Server-Sent Events), with chunked
// transfer encoding. The handler owns one of civetweb's threads until it
// returns; it must return soon after Cancelled() turns true.
class HttpStream {
 public:
  virtual ~HttpStream() = default;
  // Sends the status line and headers. Once only. Without `content_length`
  // the body is chunked (HTTP/1.1) or ends with the connection (HTTP/1.0).
  // With it the body is sent as is and the connection closes after it: a
  // handler that stops short (a read error) leaves the client a body shorter
  // than announced, which it reports as an error, never as a whole answer.
  virtual bool Begin(int status, const std::string& content_type,
                     const std::vector<std::pair<std::string, std::string>>& headers,
                     int64_t content_length = -1) = 0;
  // One chunk. False when the client is gone, the server stops, or the
  // client read nothing for the write timeout (a reader that stalls is cut).
  virtual bool Write(absl::string_view bytes) = 0;
  // The server is stopping: the handler should return now.
  virtual bool Cancelled() const = 0;
  // `wake` runs (on the stopping thread) when the server stops, so a handler
  // waiting for something else notices. Replacing it (nullptr) waits for a
  // running one to return; see ScopedCancelHook.
  virtual void OnCancel(std::function<void()> wake) = 0;
};

// Sets a stream's cancel callback for a scope: declared after what the
// callback uses, it unhooks it before that is destroyed.
class ScopedCancelHook {
 public:
  ScopedCancelHook(HttpStream* stream, std::function<void()> wake) : stream_(stream) {
    stream_->OnCancel(std::move(wake));
  }
  ~ScopedCancelHook() { stream_->OnCancel(nullptr); }
  ScopedCancelHook(const ScopedCancelHook&) = delete;
  ScopedCancelHook& operator=(const ScopedCancelHook&) = delete;

 private:
  HttpStream* const stream_;
};

// Answers with an ordinary response (errors, before Begin), or streams and
// returns nullopt.
using StreamHandler = std::function<std::optional<HttpResponse>(const HttpRequest&, HttpStream*)>;

// A JSON error body {"error":{"code":"INVALID_ARGUMENT","message":"..."}} with
// the HTTP status that matches the status code (400 for INVALID_ARGUMENT...).
HttpResponse ErrorResponse(const absl::Status& status);
int HttpStatusFor(absl::StatusCode code);

// JSON bodies nested deeper than this are refused before any handler parses
// them (protobuf's binary parser has the same limit): protobuf's JSON parser
// recurses per level and costs super-linear CPU on deep nesting.
inline constexpr int kMaxJsonNesting = 100;

// OK, or INVALID_ARGUMENT when `body` nests objects/arrays deeper than
// `max_depth`. One pass, O(size), no allocation; strings are skipped so
// brackets inside them do not count. Does not otherwise validate the JSON.
absl::Status CheckJsonNesting(absl::string_view body, int max_depth = kMaxJsonNesting);

// The admin port of every binary (civetweb): /metrics from the one registry
// made in main, /healthz (process up), /readyz (ready to serve), and the JSON
// routes a service adds. Handlers run on civetweb's threads.
class AdminHttpServer {
 public:
  explicit AdminHttpServer(std::shared_ptr<prometheus::Registry> registry);
  ~AdminHttpServer();
  AdminHttpServer(const AdminHttpServer&) = delete;
  AdminHttpServer& operator=(const AdminHttpServer&) = delete;

  // `path` is exact, or a prefix when it ends with '/' (e.g. "/api/webhooks/").
  // Exact routes win over prefixes; longer prefixes over shorter ones.
  void Route(const std::string& method, const std::string& path, HttpHandler handler);
  // The same, for callers with `scope` only (403 naming it otherwise).
  void Route(const std::string& method, const std::string& path, Scope::Kind scope,
             HttpHandler handler);
  // A route that needs no caller even with authentication on (static files
  // that hold no data, such as the console's page).
  void PublicRoute(const std::string& method, const std::string& path, HttpHandler handler);
  // A streaming route for callers with `scope`; at most `max_streams` at
  // once (503 beyond), each on a civetweb thread of its own. With
  // `query_token`, a caller may give its bearer token as ?access_token=
  // (browsers' EventSource cannot send headers). Before Start.
  void StreamRoute(const std::string& method, const std::string& path, Scope::Kind scope,
                   int max_streams, bool query_token, StreamHandler handler);
  void SetReadiness(std::function<bool()> ready) { ready_ = std::move(ready); }
  // civetweb threads for everything but streams (8). A thread serves one
  // keep-alive connection until it idles, so a server that many clients keep
  // connections open to (a webhook receiver) needs one per connection, or
  // requests on the others wait seconds. Before Start.
  void SetWorkerThreads(int n) { worker_threads_ = std::max(1, n); }
  // Every route but the public ones (/metrics, /healthz, /readyz and those of
  // PublicRoute) needs a caller this
  // accepts (401 otherwise). Before Start; must outlive the server.
  void SetAuthenticator(Authenticator* auth) { auth_ = auth; }
  // Runs before each /metrics scrape (e.g. to read process metrics).
  void SetBeforeScrape(std::function<void()> hook) { before_scrape_ = std::move(hook); }

  // addr is HOST:PORT; port 0 picks a free port. Returns the bound port.
  // With `tls` enabled the port speaks only HTTPS (mTLS with a client CA).
  absl::StatusOr<int> Start(const std::string& addr, const ServerTlsConfig& tls = {});
  void Stop() ABSL_LOCKS_EXCLUDED(streams_mu_);

 private:
  struct RouteEntry {
    std::string method;
    std::string path;
    bool prefix;
    HttpHandler handler;
    std::optional<Scope::Kind> scope;
    StreamHandler stream;  // set for streaming routes
    int max_streams = 0;
    bool query_token = false;
    bool open = false;                         // no authentication
    std::shared_ptr<std::atomic<int>> active;  // streams open on this route
  };
  class Stream;
  static int HandleRequest(mg_connection* conn, void* self);
  // The route for `req`, with its caller set in `req`; nullptr with
  // *refusal set when there is none or the caller may not use it.
  const RouteEntry* Resolve(HttpRequest& req, HttpResponse* refusal) const;
  // Streams `req` on `route`, or returns the plain response that answers it.
  std::optional<HttpResponse> RunStream(mg_connection* conn, const RouteEntry& route,
                                        const HttpRequest& req) ABSL_LOCKS_EXCLUDED(streams_mu_);

  std::shared_ptr<prometheus::Registry> registry_;
  std::function<bool()> ready_;
  Authenticator* auth_ = nullptr;
  std::function<void()> before_scrape_;
  int worker_threads_ = 8;
  std::vector<RouteEntry> routes_;
  mg_context* ctx_ = nullptr;
  std::unique_ptr<TlsTerminator> tls_;  // HTTPS in front of civetweb
  // Open streams, woken by Stop() (which sets stopping_ first).
  absl::Mutex streams_mu_;
  bool stopping_ ABSL_GUARDED_BY(streams_mu_) = false;
  std::set<Stream*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_ADMIN_HTTP_H_
