#ifndef SWITCHBOARD_LIBS_SECURITY_TLS_H_
#define SWITCHBOARD_LIBS_SECURITY_TLS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace switchboard {

// A server's certificate files (--tls_cert, --tls_key, --tls_client_ca).
// The files are read again every `reload_interval`: a certificate swapped on
// disk (as Kubernetes swaps a mounted Secret) is served to new connections
// without a restart; established connections keep theirs.
struct ServerTlsConfig {
  std::string cert_file;       // PEM chain; empty: plain text
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // set: mTLS, clients must present a certificate it signed
  absl::Duration reload_interval = absl::Seconds(5);
  bool enabled() const { return !cert_file.empty(); }
};

// A client's certificate files (--broker_tls_ca, --broker_tls_cert,
// --broker_tls_key, --broker_tls_server_name), reloaded the same way.
struct ClientTlsConfig {
  std::string ca_file;    // roots the server is checked against; empty: the system's
  std::string cert_file;  // a client certificate for mTLS (with key_file)
  std::string key_file;
  std::string server_name;  // the name checked in the server's certificate, if not the target's
  absl::Duration reload_interval = absl::Seconds(5);
  bool enabled = false;
};

// A client's TLS settings from its flags: on when any of them is given.
ClientTlsConfig ClientTlsFrom(std::string ca_file, std::string cert_file, std::string key_file,
                              std::string server_name);

// Reads and checks the files now, so that a mistake stops the binary at start
// with INVALID_ARGUMENT naming the flag (`prefix` + "cert", "key", ...)
// instead of failing every handshake later: the certificate and key parse and
// belong together, the CA holds at least one certificate.
absl::Status CheckServerTls(const ServerTlsConfig& config, const std::string& prefix = "tls_");
absl::Status CheckClientTls(const ClientTlsConfig& config,
                            const std::string& prefix = "broker_tls_");

// Credentials for grpc::ServerBuilder::AddListeningPort; insecure when TLS is
// not configured.
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const ServerTlsConfig& config);

// Credentials for a channel, and the arguments they need (the server name).
std::shared_ptr<grpc::ChannelCredentials> GrpcChannelCredentials(const ClientTlsConfig& config);
void AddTlsChannelArgs(const ClientTlsConfig& config, grpc::ChannelArguments* args);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_TLS_H_
