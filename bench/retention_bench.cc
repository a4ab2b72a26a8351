// Publish latency while retention deletes a large backlog (robustness issue,
// item 10): preloads N events, restarts the broker with --retention_count=1000
// so that its first housekeeping tick deletes N-1000 events, and measures
// unary Publish latency meanwhile, then on the quiet broker. One JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "tests/testing/process.h"

ABSL_FLAG(std::string, broker_bin, BROKER_BIN, "event-broker binary");
ABSL_FLAG(int, n, 400000, "events preloaded before retention runs");
ABSL_FLAG(int, secs, 3, "seconds of each latency sample");

namespace sb = switchboard;
using sb::broker::v1::EventBroker;

namespace {

std::unique_ptr<sb::testing::ServiceProcess> Start(const std::string& dir,
                                                   std::vector<std::string> extra) {
  std::vector<std::string> args = {"--data_dir=" + dir};
  args.insert(args.end(), extra.begin(), extra.end());
  auto p = sb::testing::ServiceProcess::Start(absl::GetFlag(FLAGS_broker_bin), args);
  if (!p.ok()) {
    std::fprintf(stderr, "%s\n", p.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(p);
}

sb::events::v1::Event Event() {
  sb::events::v1::Event ev;
  ev.set_type("order.created");
  ev.set_source("bench");
  (*ev.mutable_data()->mutable_fields())["pad"].set_string_value(std::string(200, 'x'));
  return ev;
}

// {"n":…,"p50_ms":…,"p99_ms":…,"max_ms":…} of unary publishes for `secs`.
std::string Sample(EventBroker::Stub* stub, int secs) {
  std::vector<double> ms;
  absl::Time end = absl::Now() + absl::Seconds(secs);
  sb::broker::v1::PublishRequest req;
  *req.mutable_event() = Event();
  while (absl::Now() < end) {
    grpc::ClientContext ctx;
    sb::broker::v1::PublishResponse resp;
    absl::Time t0 = absl::Now();
    if (!stub->Publish(&ctx, req, &resp).ok()) continue;
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  std::sort(ms.begin(), ms.end());
  auto q = [&](double p) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(p * ms.size()))];
  };
  return absl::StrCat("{\"n\":", ms.size(), ",\"p50_ms\":", q(0.5), ",\"p99_ms\":", q(0.99),
                      ",\"max_ms\":", ms.back(), "}");
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string dir = sb::testing::MakeTempDir();
  {
    auto broker = Start(dir, {});
    auto stub = EventBroker::NewStub(
        grpc::CreateChannel(broker->grpc_addr(), grpc::InsecureChannelCredentials()));
    for (int sent = 0; sent < absl::GetFlag(FLAGS_n);) {
      sb::broker::v1::PublishBatchRequest batch;
      for (int i = 0; i < 5000 && sent < absl::GetFlag(FLAGS_n); ++i, ++sent) {
        *batch.add_events() = Event();
      }
      grpc::ClientContext ctx;
      sb::broker::v1::PublishBatchResponse resp;
      if (!stub->PublishBatch(&ctx, batch, &resp).ok()) return 1;
    }
    broker->Terminate();
  }
  auto broker = Start(dir, {"--retention_count=1000"});
  auto stub = EventBroker::NewStub(
      grpc::CreateChannel(broker->grpc_addr(), grpc::InsecureChannelCredentials()));
  std::string during = Sample(stub.get(), absl::GetFlag(FLAGS_secs));
  std::string quiet = Sample(stub.get(), absl::GetFlag(FLAGS_secs));
  std::printf(
      "{\"system\":\"switchboard\",\"figure\":\"publish_latency_during_retention\","
      "\"preloaded\":%d,\"during\":%s,\"quiet\":%s}\n",
      absl::GetFlag(FLAGS_n), during.c_str(), quiet.c_str());
  return 0;
}
