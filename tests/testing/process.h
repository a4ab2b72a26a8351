#ifndef SWITCHBOARD_TESTS_TESTING_PROCESS_H_
#define SWITCHBOARD_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace switchboard::testing {

// A real service binary started on ephemeral ports (--grpc_addr and
// --http_addr 127.0.0.1:0), with its log in a file. Start() returns once the
// binary logged "listening grpc=HOST:PORT http=HOST:PORT".
class ServiceProcess {
 public:
  // With grpc=false only --http_addr is passed and the log line is
  // "listening http=HOST:PORT" (the sample webhook receiver).
  static absl::StatusOr<std::unique_ptr<ServiceProcess>> Start(
      const std::string& binary, const std::vector<std::string>& args,
      absl::Duration timeout = absl::Seconds(30), bool grpc = true);
  ~ServiceProcess();

  const std::string& grpc_addr() const { return grpc_addr_; }
  const std::string& http_addr() const { return http_addr_; }
  // The plain /metrics, /healthz, /readyz listener (--metrics_addr), if any.
  const std::string& metrics_addr() const { return metrics_addr_; }
  pid_t pid() const { return pid_; }

  // SIGKILL, then reap.
  void Kill9();
  // SIGTERM; returns the exit code, or -1 if it did not exit within timeout.
  int Terminate(absl::Duration timeout = absl::Seconds(30));
  // Resident set size from /proc, in bytes.
  uint64_t RssBytes() const;
  std::string Log() const;

 private:
  ServiceProcess() = default;
  pid_t pid_ = -1;
  std::string log_path_;
  std::string grpc_addr_;
  std::string http_addr_;
  std::string metrics_addr_;
};

// Runs a binary to its end (SIGKILL after `timeout`): exit code (-1 when
// killed) and everything it wrote to stdout and stderr.
struct ExitResult {
  int code = -1;
  std::string output;
};
ExitResult RunToExit(const std::string& binary, const std::vector<std::string>& args,
                     absl::Duration timeout = absl::Seconds(30));

// A bare HTTP/1.0 request to HOST:PORT; returns status code and body.
struct HttpResult {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
};
// `extra_headers`: "Name: value\r\n" lines.
HttpResult HttpRequest(const std::string& host_port, const std::string& method,
                       const std::string& path, const std::string& body = "",
                       const std::string& extra_headers = "");

// The value of one series (name with labels, as printed) on the /metrics of
// the admin port at `http_addr`; 0 when absent.
double MetricValue(const std::string& http_addr, const std::string& series);

// Waits for `condition` with a deadline, polling; no fixed sleeps in tests.
bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout,
               absl::Duration poll = absl::Milliseconds(10));

// A new directory "<tmp>/switchboard-<name>-XXXXXX" ("" when it cannot be
// made), removed when this process exits after every test passed.
std::string MakeTempDir(absl::string_view name = "it");

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_TESTING_PROCESS_H_
