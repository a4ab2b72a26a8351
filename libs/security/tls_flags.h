#ifndef SWITCHBOARD_LIBS_SECURITY_TLS_FLAGS_H_
#define SWITCHBOARD_LIBS_SECURITY_TLS_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
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

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_TLS_FLAGS_H_
