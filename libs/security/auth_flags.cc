#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "libs/common/json_log.h"
#include "libs/security/file_util.h"
#include "libs/security/tls_flags.h"

ABSL_FLAG(std::string, auth_tokens_file, "",
          "JSON lines {\"principal\",\"token_sha256\" or \"tls_identity\",\"scopes\":[...]}: "
          "with it every RPC and JSON route needs 'authorization: Bearer <token>' (or a mapped "
          "client certificate); reloaded on change");
ABSL_FLAG(std::string, broker_token_file, "",
          "file holding the bearer token this service presents to the broker");

namespace switchboard {

absl::StatusOr<std::unique_ptr<Authenticator>> OpenAuthenticatorFromFlags(AuthMetrics* metrics) {
  std::string path = absl::GetFlag(FLAGS_auth_tokens_file);
  if (path.empty()) {
    LogWarn(
        "authentication is off: anyone who reaches a port may call every RPC and route "
        "(set --auth_tokens_file)");
    return std::make_unique<Authenticator>(metrics);
  }
  absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Open(path, metrics);
  if (auth.ok()) LogInfo("authentication is on", {{"auth_tokens_file", path}});
  return auth;
}

absl::StatusOr<std::string> ReadBrokerTokenFlag() {
  std::string path = absl::GetFlag(FLAGS_broker_token_file);
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> text = ReadFlagFile(path, "broker_token_file");
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty() || token.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("broker_token_file: '", path, "' must hold one token"));
  }
  return token;
}

absl::StatusOr<EdgeSecurity> ReadEdgeSecurityFlags(AuthMetrics* metrics, bool mesh_client) {
  EdgeSecurity out;
  absl::StatusOr<ServerTlsConfig> tls = ReadServerTlsFlags();
  if (!tls.ok()) return tls.status();
  out.tls = *std::move(tls);
  out.metrics_addr = MetricsAddrFlag();
  absl::StatusOr<std::unique_ptr<Authenticator>> auth = OpenAuthenticatorFromFlags(metrics);
  if (!auth.ok()) return auth.status();
  out.auth = *std::move(auth);
  if (mesh_client) {
    absl::StatusOr<ClientTlsConfig> broker_tls = ReadBrokerClientTlsFlags();
    if (!broker_tls.ok()) return broker_tls.status();
    out.broker_tls = *std::move(broker_tls);
    absl::StatusOr<std::string> token = ReadBrokerTokenFlag();
    if (!token.ok()) return token.status();
    out.broker_token = *std::move(token);
    if (!out.broker_token.empty() && !out.broker_tls.enabled) {
      LogWarn(
          "--broker_token_file without --broker_tls_*: the token travels to the broker in "
          "plain text");
    }
  }
  return out;
}

void EdgeSecurity::ApplyTo(ServiceEdges* edges) const {
  edges->set_tls(tls);
  edges->set_metrics_addr(metrics_addr);
  edges->http().SetAuthenticator(auth.get());
}

}  // namespace switchboard
