#ifndef SWITCHBOARD_LIBS_COMMON_SERVICE_EDGES_H_
#define SWITCHBOARD_LIBS_COMMON_SERVICE_EDGES_H_

#include <atomic>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "libs/common/admin_http.h"
#include "libs/common/grpc_server.h"
#include "libs/common/json_log.h"
#include "libs/common/service_metrics.h"
#include "prometheus/registry.h"

namespace switchboard {

// What every binary exposes, started the same way: the gRPC server (health,
// reflection, request metrics) and the admin HTTP server (/metrics with
// process metrics, /healthz, /readyz, JSON routes), then the start-up line
// "listening grpc=HOST:PORT http=HOST:PORT". main() adds its services and
// routes, and on SIGTERM calls BeginShutdown, drains its core, then Stop.
class ServiceEdges {
 public:
  // `service` names the metrics: switchboard_<service>_grpc_..., _process_...
  ServiceEdges(std::shared_ptr<prometheus::Registry> registry, const std::string& service);

  AdminHttpServer& http() { return http_; }
  // A channel to this process's own gRPC services without the network
  // (after Start): the same handlers, interceptors and authorization.
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // `ready` says whether the core can serve (readiness is also off once
  // shutting down). `extra` fields go on the start-up line.
  absl::Status Start(const std::string& grpc_addr, const std::string& http_addr,
                     const std::vector<grpc::Service*>& services, std::function<bool()> ready,
                     std::initializer_list<LogField> extra = {});
  // Readiness off, gRPC health NOT_SERVING.
  void BeginShutdown();
  // gRPC health SERVING or NOT_SERVING (ignored once shutting down); the
  // core's readiness changed.
  void SetServing(bool serving);
  // Ends gRPC calls still running after `grace`, stops the admin server.
  void Stop(absl::Duration grace);

  // TLS (and mTLS) of the gRPC and admin HTTP ports (before Start).
  void set_tls(const ServerTlsConfig& tls) { tls_ = tls; }
  // A second, plain HTTP listener with only /metrics, /healthz and /readyz,
  // so that Prometheus and the kubelet need no certificate or token when the
  // admin port has them (before Start; empty: none).
  void set_metrics_addr(const std::string& addr) { metrics_addr_ = addr; }

  // Memory gRPC may use for calls in flight (before Start).
  void set_grpc_memory_quota(int64_t bytes) { grpc_memory_quota_ = bytes; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  ServiceMetrics metrics_;
  AdminHttpServer http_;
  AdminHttpServer metrics_http_;
  RunningGrpcServer grpc_;
  int64_t grpc_memory_quota_ = 1LL << 30;
  ServerTlsConfig tls_;
  std::string metrics_addr_;
  std::atomic<bool> stopping_{false};
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_SERVICE_EDGES_H_
