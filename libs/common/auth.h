#ifndef SWITCHBOARD_LIBS_COMMON_AUTH_H_
#define SWITCHBOARD_LIBS_COMMON_AUTH_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"

namespace switchboard {

// One scope of a principal (SPEC §6):
//   admin                         everything, incl. dead-letter replay
//   jobs:read, jobs:admin         job-worker reads; pause/resume (implies read)
//   webhooks:read, webhooks:admin webhook-delivery reads; changes (implies read)
//   publish:<pattern>             publish events whose type the pattern matches
//   subscribe:<pattern>[@<group>] broadcast and group subscriptions, acks,
//                                 history and stats of the matching types
// Patterns match as subscription filters do: exact, "prefix.*" or "*".
struct Scope {
  enum Kind { kAdmin, kJobsRead, kJobsAdmin, kWebhooksRead, kWebhooksAdmin, kPublish, kSubscribe };
  Kind kind = kAdmin;
  std::string pattern;  // publish, subscribe
  std::string group;    // subscribe: empty for any group and broadcast
};
absl::StatusOr<Scope> ParseScope(absl::string_view text);
std::string ScopeName(Scope::Kind kind);  // "jobs:read"...

// Who is calling. With authentication off every caller is `anonymous`, with
// every scope.
struct Principal {
  std::string name;
  std::vector<Scope> scopes;
  bool anonymous = false;

  // The caller when authentication is off: allowed everything.
  static Principal Anonymous() {
    Principal p;
    p.name = "anonymous";
    p.anonymous = true;
    return p;
  }
};

// PERMISSION_DENIED naming the missing scope unless the principal has it.
absl::Status RequireScope(const Principal& p, Scope::Kind kind);
absl::Status RequirePublish(const Principal& p, absl::string_view type);
// Every requested filter (empty: "*") must be covered by a subscribe scope
// whose pattern covers it and whose group (if any) is `group`.
absl::Status RequireSubscribe(const Principal& p, const std::vector<std::string>& types,
                              absl::string_view group);
// Acks, nacks and dead letters of a group: any subscribe scope for it.
absl::Status RequireGroup(const Principal& p, absl::string_view group);
// History and stats show only types the principal may subscribe to.
bool MaySee(const Principal& p, absl::string_view type);

// What a caller presented: the Authorization header (or gRPC metadata) and
// the identities of its verified client certificate (SAN DNS/URI, CN).
struct Credentials {
  std::string authorization;
  std::vector<std::string> tls_identities;
};

// switchboard_<service>_auth_failures_total{reason, method}.
class AuthMetrics {
 public:
  AuthMetrics(prometheus::Registry& registry, const std::string& service);
  void Failure(absl::string_view reason, absl::string_view method);

 private:
  prometheus::Family<prometheus::Counter>& failures_;
};

// The principals of --auth_tokens_file: JSON lines
//   {"principal":"checkout-service","token_sha256":"<hex>","scopes":["publish:order.*"]}
//   {"principal":"worker","tls_identity":"spiffe://switchboard/worker","scopes":[...]}
// Only hashes are on disk. A thread of its own (sb-auth-reload) reads the
// file again every `reload_interval` and swaps the table when it changed, so
// no call ever waits on the file; a file that no longer parses (or is empty:
// half of a write) is logged and the previous principals kept. Tokens never
// appear in logs, errors or metrics.
class Authenticator {
 public:
  // Authentication off: every caller is anonymous with every scope.
  explicit Authenticator(AuthMetrics* metrics = nullptr);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;
  // INVALID_ARGUMENT naming auth_tokens_file and the line.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Open(
      const std::string& path, AuthMetrics* metrics,
      absl::Duration reload_interval = absl::Seconds(5));

  bool enabled() const { return !path_.empty(); }

  // The caller, or UNAUTHENTICATED ("missing bearer token", "invalid bearer
  // token"). A bearer token wins over a certificate identity.
  absl::StatusOr<Principal> Authenticate(const Credentials& credentials, absl::string_view method)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Counts a PERMISSION_DENIED `status` for `method` and passes it on.
  absl::Status Denied(absl::Status status, absl::string_view method);

 private:
  struct Table {
    std::map<std::string, Principal> by_token_hash;  // lower-case hex SHA-256
    std::map<std::string, Principal> by_identity;
  };
  static absl::StatusOr<std::shared_ptr<const Table>> Parse(const std::string& text);
  std::shared_ptr<const Table> Current() ABSL_LOCKS_EXCLUDED(mu_);
  void ReloadLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void ReloadOnce() ABSL_LOCKS_EXCLUDED(mu_);

  std::string path_;
  AuthMetrics* metrics_ = nullptr;
  absl::Duration reload_interval_;
  absl::Mutex mu_;
  std::shared_ptr<const Table> table_ ABSL_GUARDED_BY(mu_);
  std::string text_ ABSL_GUARDED_BY(mu_);  // of the last read, parsed or not
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reloader_;
};

std::string Sha256Hex(absl::string_view data);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_AUTH_H_
