#include "absl/flags/flag.h"
#include "libs/security/tls_flags.h"

ABSL_FLAG(std::string, broker_tls_ca, "",
          "PEM CA that signed the broker's certificate (TLS to the broker; reloaded on change)");
ABSL_FLAG(std::string, broker_tls_cert, "",
          "PEM client certificate presented to the broker (mTLS), with --broker_tls_key");
ABSL_FLAG(std::string, broker_tls_key, "", "PEM private key of --broker_tls_cert");
ABSL_FLAG(std::string, broker_tls_server_name, "",
          "the name the broker's certificate must carry, when not the --broker host "
          "(e.g. an address list or a headless Service)");

namespace switchboard {

absl::StatusOr<ClientTlsConfig> ReadBrokerClientTlsFlags() {
  ClientTlsConfig c = ClientTlsFrom(
      absl::GetFlag(FLAGS_broker_tls_ca), absl::GetFlag(FLAGS_broker_tls_cert),
      absl::GetFlag(FLAGS_broker_tls_key), absl::GetFlag(FLAGS_broker_tls_server_name));
  if (absl::Status s = CheckClientTls(c); !s.ok()) return s;
  return c;
}

}  // namespace switchboard
