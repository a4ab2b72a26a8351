#ifndef SWITCHBOARD_LIBS_COMMON_GRPC_AUTH_H_
#define SWITCHBOARD_LIBS_COMMON_GRPC_AUTH_H_

#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "libs/common/auth.h"

namespace switchboard {

// What a gRPC caller presented: the `authorization` metadata and, over mTLS,
// its certificate's identities (SAN DNS and URI names, then the CN).
Credentials CredentialsOf(const grpc::CallbackServerContext& ctx);

// The caller of `method` if `auth` accepts it and, when `kind` is given, it
// has that scope; otherwise UNAUTHENTICATED or PERMISSION_DENIED naming the
// scope (counted in the auth metrics). A null `auth` lets everyone in.
absl::StatusOr<Principal> AuthorizeCall(Authenticator* auth, const grpc::CallbackServerContext& ctx,
                                        absl::string_view method,
                                        std::optional<Scope::Kind> kind = std::nullopt);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_GRPC_AUTH_H_
