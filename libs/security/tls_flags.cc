#include "libs/security/tls_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of this binary's gRPC and admin HTTP ports (TLS when set; "
          "reloaded when the file changes)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "mTLS: clients must present a certificate signed by this PEM CA");
ABSL_FLAG(std::string, metrics_addr, "",
          "HOST:PORT of a plain HTTP listener serving only /metrics, /healthz and /readyz, so "
          "that Prometheus and the kubelet need no certificate when the admin port has TLS");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(5),
          "how often the certificate files are read again (1s to 1h)");

namespace switchboard {

absl::StatusOr<ServerTlsConfig> ReadServerTlsFlags() {
  ServerTlsConfig c;
  c.cert_file = absl::GetFlag(FLAGS_tls_cert);
  c.key_file = absl::GetFlag(FLAGS_tls_key);
  c.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  c.reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  if (c.reload_interval < absl::Seconds(1) || c.reload_interval > absl::Hours(1)) {
    return absl::InvalidArgumentError("tls_reload_interval: 1s to 1h");
  }
  if (absl::Status s = CheckServerTls(c); !s.ok()) return s;
  return c;
}

std::string MetricsAddrFlag() { return absl::GetFlag(FLAGS_metrics_addr); }

}  // namespace switchboard
