#ifndef SWITCHBOARD_LIBS_COMMON_ADMIN_HTTP_H_
#define SWITCHBOARD_LIBS_COMMON_ADMIN_HTTP_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  void SetReadiness(std::function<bool()> ready) { ready_ = std::move(ready); }
  // Every route but /metrics, /healthz and /readyz needs a caller this
  // accepts (401 otherwise). Before Start; must outlive the server.
  void SetAuthenticator(Authenticator* auth) { auth_ = auth; }
  // Runs before each /metrics scrape (e.g. to read process metrics).
  void SetBeforeScrape(std::function<void()> hook) { before_scrape_ = std::move(hook); }

  // addr is HOST:PORT; port 0 picks a free port. Returns the bound port.
  // With `tls` enabled the port speaks only HTTPS (mTLS with a client CA).
  absl::StatusOr<int> Start(const std::string& addr, const ServerTlsConfig& tls = {});
  void Stop();

 private:
  struct RouteEntry {
    std::string method;
    std::string path;
    bool prefix;
    HttpHandler handler;
    std::optional<Scope::Kind> scope;
  };
  static int HandleRequest(mg_connection* conn, void* self);
  HttpResponse Dispatch(HttpRequest& req) const;

  std::shared_ptr<prometheus::Registry> registry_;
  std::function<bool()> ready_;
  Authenticator* auth_ = nullptr;
  std::function<void()> before_scrape_;
  std::vector<RouteEntry> routes_;
  mg_context* ctx_ = nullptr;
  std::unique_ptr<TlsTerminator> tls_;  // HTTPS in front of civetweb
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_ADMIN_HTTP_H_
