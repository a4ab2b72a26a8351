#ifndef SWITCHBOARD_LIBS_COMMON_GRPC_SERVER_H_
#define SWITCHBOARD_LIBS_COMMON_GRPC_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "libs/security/tls.h"

namespace switchboard {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Answers a callback-API unary call with the outcome of a synchronous call.
template <typename Response>
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx,
                                      absl::StatusOr<Response> result, Response* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
  } else {
    *response = *std::move(result);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

// Answers a unary call with an error (a refused caller, a bad request).
inline grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx,
                                        const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

class ServiceMetrics;

struct GrpcServerOptions {
  std::string addr;  // HOST:PORT, port 0 picks one
  int max_receive_message_bytes = 64 << 20;
  // gRPC's memory for requests being read and answers being written; past it
  // new requests wait or fail with RESOURCE_EXHAUSTED instead of growing RSS.
  int64_t memory_quota_bytes = 1LL << 30;
  ServiceMetrics* metrics = nullptr;  // adds the request metrics interceptor
  ServerTlsConfig tls;                // plain text unless tls.enabled()
};

struct RunningGrpcServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

// Starts a server with the given services plus grpc.health.v1 and reflection
// (so grpcurl and buf curl work without proto files).
absl::StatusOr<RunningGrpcServer> StartGrpcServer(const GrpcServerOptions& options,
                                                  const std::vector<grpc::Service*>& services);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_GRPC_SERVER_H_
