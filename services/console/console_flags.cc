#include "absl/flags/flag.h"
#include "services/console/console.h"

ABSL_FLAG(std::string, console_jobs_addr, "",
          "job-worker gRPC HOST:PORT the console reads (queues, jobs); empty: no Jobs view");
ABSL_FLAG(std::string, console_webhooks_addr, "",
          "webhook-delivery gRPC HOST:PORT the console reads (endpoints, deliveries)");
ABSL_FLAG(std::string, console_tls_ca, "",
          "PEM CA of job-worker's and webhook-delivery's certificates (TLS from the console)");
ABSL_FLAG(std::string, console_tls_cert, "",
          "PEM client certificate the console presents to them (mTLS), with --console_tls_key");
ABSL_FLAG(std::string, console_tls_key, "", "PEM private key of --console_tls_cert");
ABSL_FLAG(std::string, console_tls_server_name, "",
          "the name their certificates must carry, when not the address's host");

namespace switchboard::console {

absl::StatusOr<ConsoleConfig> ReadConsoleFlags() {
  ConsoleConfig c;
  c.jobs_addr = absl::GetFlag(FLAGS_console_jobs_addr);
  c.webhooks_addr = absl::GetFlag(FLAGS_console_webhooks_addr);
  c.tls = ClientTlsFrom(absl::GetFlag(FLAGS_console_tls_ca), absl::GetFlag(FLAGS_console_tls_cert),
                        absl::GetFlag(FLAGS_console_tls_key),
                        absl::GetFlag(FLAGS_console_tls_server_name));
  if (absl::Status s = CheckClientTls(c.tls, "console_tls_"); !s.ok()) return s;
  return c;
}

}  // namespace switchboard::console
