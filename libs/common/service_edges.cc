#include "libs/common/service_edges.h"

#include "absl/strings/str_cat.h"

namespace switchboard {
namespace {

std::string HostOf(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

}  // namespace

ServiceEdges::ServiceEdges(std::shared_ptr<prometheus::Registry> registry,
                           const std::string& service)
    : registry_(registry), metrics_(*registry, service), http_(registry) {
  http_.SetBeforeScrape([this] { metrics_.UpdateProcess(); });
}

absl::Status ServiceEdges::Start(const std::string& grpc_addr, const std::string& http_addr,
                                 const std::vector<grpc::Service*>& services,
                                 std::function<bool()> ready,
                                 std::initializer_list<LogField> extra) {
  absl::StatusOr<RunningGrpcServer> grpc =
      StartGrpcServer({grpc_addr, 64 << 20, grpc_memory_quota_, &metrics_}, services);
  if (!grpc.ok()) return grpc.status();
  grpc_ = *std::move(grpc);
  http_.SetReadiness(
      [this, ready = std::move(ready)] { return !stopping_.load() && (!ready || ready()); });
  absl::StatusOr<int> http_port = http_.Start(http_addr);
  if (!http_port.ok()) return http_port.status();
  std::string grpc_bound = absl::StrCat(HostOf(grpc_addr), ":", grpc_.port);
  std::string http_bound = absl::StrCat(HostOf(http_addr), ":", *http_port);
  std::vector<LogField> fields = {{"grpc", grpc_bound}, {"http", http_bound}};
  fields.insert(fields.end(), extra.begin(), extra.end());
  std::string line = absl::StrCat("listening grpc=", grpc_bound, " http=", http_bound);
  LogWithFields(LogLevel::kStartup, line, fields);
  return absl::OkStatus();
}

void ServiceEdges::BeginShutdown() {
  stopping_ = true;
  if (grpc_.server != nullptr) grpc_.server->GetHealthCheckService()->SetServingStatus(false);
}

void ServiceEdges::SetServing(bool serving) {
  if (stopping_.load() || grpc_.server == nullptr) return;
  grpc_.server->GetHealthCheckService()->SetServingStatus(serving);
}

void ServiceEdges::Stop(absl::Duration grace) {
  if (grpc_.server != nullptr) grpc_.server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  http_.Stop();
}

}  // namespace switchboard
