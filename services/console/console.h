#ifndef SWITCHBOARD_SERVICES_CONSOLE_CONSOLE_H_
#define SWITCHBOARD_SERVICES_CONSOLE_CONSOLE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/common/admin_http.h"
#include "libs/security/tls.h"

namespace grpc {
class Channel;
}

namespace switchboard::console {

// Where the console finds the services besides the broker that serves it.
struct ConsoleConfig {
  std::string jobs_addr;      // job-worker gRPC HOST:PORT; empty: no Jobs view
  std::string webhooks_addr;  // webhook-delivery gRPC HOST:PORT; empty: none
  ClientTlsConfig tls;        // for both
  absl::Duration call_timeout = absl::Seconds(5);
};

// --console_jobs_addr, --console_webhooks_addr and --console_tls_{ca,cert,
// key,server_name}; INVALID_ARGUMENT naming the flag.
absl::StatusOr<ConsoleConfig> ReadConsoleFlags();

// The live console on an admin port: the page and its assets under
// /console/ (compiled into the binary; nothing is fetched from elsewhere),
// and POST /api/console/rpc/{broker,jobs,webhooks}/<Method>, which calls
// that gRPC method of the service with the JSON body (protobuf JSON mapping)
// and answers its response as JSON. Only the methods the console uses are
// reachable. The caller's `authorization` header goes along, so every call
// is authorized by the service itself, with the caller's scopes.
class Console {
 public:
  explicit Console(ConsoleConfig config);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  // Routes on `http` (before it starts).
  void Register(AdminHttpServer* http);
  // The broker's own gRPC service (an in-process channel once its server
  // runs); until then broker calls answer UNAVAILABLE.
  void SetBrokerChannel(std::shared_ptr<grpc::Channel> channel);

  // One call as the route makes it; for tests.
  HttpResponse Call(absl::string_view service, absl::string_view method,
                    const HttpRequest& request);

 private:
  std::shared_ptr<grpc::Channel> ChannelFor(absl::string_view service);

  const ConsoleConfig config_;
  const std::shared_ptr<grpc::Channel> jobs_;
  const std::shared_ptr<grpc::Channel> webhooks_;
  absl::Mutex mu_;
  std::shared_ptr<grpc::Channel> broker_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::console

#endif  // SWITCHBOARD_SERVICES_CONSOLE_CONSOLE_H_
