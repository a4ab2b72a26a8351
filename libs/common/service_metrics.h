#ifndef SWITCHBOARD_LIBS_COMMON_SERVICE_METRICS_H_
#define SWITCHBOARD_LIBS_COMMON_SERVICE_METRICS_H_

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace switchboard {

// Metrics every binary has, named switchboard_<service>_...: gRPC requests by
// method and code with a latency histogram (through one server interceptor),
// and process metrics (RSS, CPU, open file descriptors).
class ServiceMetrics {
 public:
  ServiceMetrics(prometheus::Registry& registry, const std::string& service);

  // For ServerBuilder::experimental().SetInterceptorCreators.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // Reads /proc/self; call before each scrape.
  void UpdateProcess();

  void RecordRpc(const std::string& method, int code, double seconds);

 private:
  prometheus::Family<prometheus::Counter>& requests_;   // {method, code}
  prometheus::Family<prometheus::Histogram>& latency_;  // {method}
  prometheus::Gauge& rss_;
  prometheus::Counter& cpu_;
  prometheus::Gauge& fds_;
  prometheus::Gauge& threads_;
  absl::Mutex mu_;
  double cpu_seen_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_SERVICE_METRICS_H_
