#include "libs/common/service_metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/support/interceptor.h"

namespace switchboard {
namespace {

const char* CodeName(int code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServiceMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->RecordRpc(method_, methods->GetSendStatus().error_code(),
                          absl::ToDoubleSeconds(absl::Now() - start_));
    }
    methods->Proceed();
  }

 private:
  ServiceMetrics* metrics_;
  std::string method_;
  absl::Time start_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(ServiceMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info->method() ? info->method() : "unknown");
  }

 private:
  ServiceMetrics* metrics_;
};

}  // namespace

ServiceMetrics::ServiceMetrics(prometheus::Registry& r, const std::string& service)
    : requests_(prometheus::BuildCounter()
                    .Name(absl::StrCat("switchboard_", service, "_grpc_requests_total"))
                    .Help("gRPC requests handled, by method and status code.")
                    .Register(r)),
      latency_(prometheus::BuildHistogram()
                   .Name(absl::StrCat("switchboard_", service, "_grpc_request_duration_seconds"))
                   .Help("gRPC request duration (streams: their whole life), by method.")
                   .Register(r)),
      rss_(prometheus::BuildGauge()
               .Name(absl::StrCat("switchboard_", service, "_process_resident_memory_bytes"))
               .Help("Resident set size of the process.")
               .Register(r)
               .Add({})),
      cpu_(prometheus::BuildCounter()
               .Name(absl::StrCat("switchboard_", service, "_process_cpu_seconds_total"))
               .Help("User and system CPU time of the process.")
               .Register(r)
               .Add({})),
      fds_(prometheus::BuildGauge()
               .Name(absl::StrCat("switchboard_", service, "_process_open_fds"))
               .Help("Open file descriptors of the process.")
               .Register(r)
               .Add({})),
      threads_(prometheus::BuildGauge()
                   .Name(absl::StrCat("switchboard_", service, "_process_threads"))
                   .Help("Threads of the process.")
                   .Register(r)
                   .Add({})) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServiceMetrics::InterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

void ServiceMetrics::RecordRpc(const std::string& method, int code, double seconds) {
  requests_.Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30};
  latency_.Add({{"method", method}}, *buckets).Observe(seconds);
}

void ServiceMetrics::UpdateProcess() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  // Fields after the command name (which may hold spaces) start after ") ".
  size_t close = line.rfind(')');
  if (close != std::string::npos) {
    std::vector<std::string> f = absl::StrSplit(line.substr(close + 2), ' ');
    // f[11] utime, f[12] stime (ticks), f[17] num_threads, f[21] rss (pages).
    if (f.size() > 21) {
      double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      {
        absl::MutexLock lock(&mu_);
        if (cpu > cpu_seen_) {
          cpu_.Increment(cpu - cpu_seen_);
          cpu_seen_ = cpu;
        }
      }
      threads_.Set(std::stod(f[17]));
      rss_.Set(std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE)));
    }
  }
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++fds;
    closedir(d);
    fds -= 3;  // ".", ".." and the directory itself
  }
  fds_.Set(fds);
}

}  // namespace switchboard
