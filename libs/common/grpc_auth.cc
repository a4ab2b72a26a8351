#include "libs/common/grpc_auth.h"

#include <algorithm>

namespace switchboard {

Credentials CredentialsOf(const grpc::CallbackServerContext& ctx) {
  Credentials c;
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it != md.end()) c.authorization.assign(it->second.data(), it->second.size());
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const char* property : {"x509_subject_alternative_name", "x509_common_name"}) {
      for (const grpc::string_ref& v : auth->FindPropertyValues(property)) {
        std::string id(v.data(), v.size());
        if (std::find(c.tls_identities.begin(), c.tls_identities.end(), id) ==
            c.tls_identities.end()) {
          c.tls_identities.push_back(std::move(id));
        }
      }
    }
  }
  return c;
}

absl::StatusOr<Principal> AuthorizeCall(Authenticator* auth, const grpc::CallbackServerContext& ctx,
                                        absl::string_view method, std::optional<Scope::Kind> kind) {
  if (auth == nullptr || !auth->enabled()) {
    return Principal::Anonymous();
  }
  absl::StatusOr<Principal> caller = auth->Authenticate(CredentialsOf(ctx), method);
  if (!caller.ok() || !kind.has_value()) return caller;
  if (absl::Status s = auth->Denied(RequireScope(*caller, *kind), method); !s.ok()) return s;
  return caller;
}

}  // namespace switchboard
