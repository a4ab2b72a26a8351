#ifndef SWITCHBOARD_LIBS_SECURITY_TLS_FLAGS_H_
#define SWITCHBOARD_LIBS_SECURITY_TLS_FLAGS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "libs/common/auth.h"
#include "libs/common/service_edges.h"
#include "libs/security/tls.h"

namespace switchboard {

// The TLS flags of every binary's own ports, defined once:
//   --tls_cert, --tls_key      server certificate chain and key (PEM)
//   --tls_client_ca            mTLS: the CA client certificates must chain to
//   --tls_reload_interval      how often the files are read again
// Checked: INVALID_ARGUMENT naming the flag.
absl::StatusOr<ServerTlsConfig> ReadServerTlsFlags();

// --metrics_addr: HOST:PORT of a plain HTTP listener with only /metrics,
// /healthz and /readyz (empty: none), for when the admin port has TLS.
std::string MetricsAddrFlag();

// The flags of a mesh client of the broker (job-worker, webhook-delivery):
//   --broker_tls_ca, --broker_tls_cert, --broker_tls_key,
//   --broker_tls_server_name
// Any of them turns TLS on for the broker connection.
absl::StatusOr<ClientTlsConfig> ReadBrokerClientTlsFlags();

// --auth_tokens_file: the principals, or authentication off (with one warning
// in the log) when the flag is not set. Errors name the flag and the line.
absl::StatusOr<std::unique_ptr<Authenticator>> OpenAuthenticatorFromFlags(AuthMetrics* metrics);

// --broker_token_file: the bearer token a mesh client presents to the broker
// (empty when not set).
absl::StatusOr<std::string> ReadBrokerTokenFlag();

// Everything above for one binary, read and checked at once.
struct EdgeSecurity {
  ServerTlsConfig tls;
  std::string metrics_addr;
  std::unique_ptr<Authenticator> auth;
  // Mesh clients only: the broker connection.
  ClientTlsConfig broker_tls;
  std::string broker_token;

  // TLS, the plain metrics listener and authentication of the admin routes
  // (before edges->Start; `auth` must outlive the edges).
  void ApplyTo(ServiceEdges* edges) const;
};
absl::StatusOr<EdgeSecurity> ReadEdgeSecurityFlags(AuthMetrics* metrics, bool mesh_client);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_TLS_FLAGS_H_
