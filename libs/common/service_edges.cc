#include "libs/common/service_edges.h"

#include "absl/strings/str_cat.h"

namespace switchboard {
namespace {

std::string HostOf(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

}  // namespace

ServiceEdges::ServiceEdges(std::shared_ptr<prometheus::Registry> registry,
                           const std::string& service)
    : registry_(registry), metrics_(*registry, service), http_(registry), metrics_http_(registry) {
  http_.SetBeforeScrape([this] { metrics_.UpdateProcess(); });
  metrics_http_.SetBeforeScrape([this] { metrics_.UpdateProcess(); });
}

absl::Status ServiceEdges::Start(const std::string& grpc_addr, const std::string& http_addr,
                                 const std::vector<grpc::Service*>& services,
                                 std::function<bool()> ready,
                                 std::initializer_list<LogField> extra) {
  absl::StatusOr<RunningGrpcServer> grpc =
      StartGrpcServer({grpc_addr, 64 << 20, grpc_memory_quota_, &metrics_, tls_}, services);
  if (!grpc.ok()) return grpc.status();
  grpc_ = *std::move(grpc);
  auto readiness = [this, ready = std::move(ready)] {
    return !stopping_.load() && (!ready || ready());
  };
  http_.SetReadiness(readiness);
  metrics_http_.SetReadiness(readiness);
  absl::StatusOr<int> http_port = http_.Start(http_addr, tls_);
  if (!http_port.ok()) return http_port.status();
  std::string grpc_bound = absl::StrCat(HostOf(grpc_addr), ":", grpc_.port);
  std::string http_bound = absl::StrCat(HostOf(http_addr), ":", *http_port);
  const char* tls = !tls_.enabled() ? "off" : tls_.client_ca_file.empty() ? "tls" : "mtls";
  std::vector<LogField> fields = {{"grpc", grpc_bound}, {"http", http_bound}, {"tls", tls}};
  std::string line = absl::StrCat("listening grpc=", grpc_bound, " http=", http_bound);
  if (!metrics_addr_.empty()) {
    absl::StatusOr<int> metrics_port = metrics_http_.Start(metrics_addr_);
    if (!metrics_port.ok()) {
      return absl::UnavailableError(absl::StrCat("metrics_addr: cannot listen on ", metrics_addr_));
    }
    std::string metrics_bound = absl::StrCat(HostOf(metrics_addr_), ":", *metrics_port);
    fields.push_back({"metrics", metrics_bound});
    absl::StrAppend(&line, " metrics=", metrics_bound);
  }
  fields.insert(fields.end(), extra.begin(), extra.end());
  LogWithFields(LogLevel::kStartup, line, fields);
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> ServiceEdges::InProcessChannel() {
  if (grpc_.server == nullptr) return nullptr;
  grpc::ChannelArguments args;
  return grpc_.server->InProcessChannel(args);
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
  metrics_http_.Stop();
}

}  // namespace switchboard
