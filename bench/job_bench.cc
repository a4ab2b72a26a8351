// Job loop benchmark: N no-op jobs through the whole loop (event published ->
// job run -> job.* events published -> event acked) with the worker's queue
// concurrency at 50, like BullMQ's no-op figure in ../shared/peers. Starts the
// real broker and worker; prints one JSON line.
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"
#include "tests/testing/process.h"

ABSL_FLAG(int, jobs, 20000, "no-op jobs");
ABSL_FLAG(int, concurrency, 50, "the worker queue's concurrency");
ABSL_FLAG(int, chunk, 1000, "events per PublishBatch when adding jobs");

namespace sb = switchboard;
namespace v1 = switchboard::broker::v1;

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int n = absl::GetFlag(FLAGS_jobs);
  std::string dir = sb::testing::MakeTempDir();
  auto broker = sb::testing::ServiceProcess::Start(
      BROKER_BIN, {"--data_dir=" + dir + "/broker", "--log_level=warn"});
  if (!broker.ok()) {
    std::fprintf(stderr, "%s\n", broker.status().ToString().c_str());
    return 2;
  }
  std::ofstream(dir + "/bench.json") << absl::StrFormat(
      R"({"replaceDefaultMappings": true,
          "mappings": [{"eventType": "bench.noop", "jobType": "noop", "queue": "bench"}],
          "queues": [{"name": "bench", "concurrency": %d}]})",
      absl::GetFlag(FLAGS_concurrency));
  auto worker = sb::testing::ServiceProcess::Start(
      WORKER_BIN, {"--broker=" + (*broker)->grpc_addr(), "--data_dir=" + dir + "/worker",
                   "--config=" + dir + "/bench.json", "--log_level=warn"});
  if (!worker.ok()) {
    std::fprintf(stderr, "%s\n", worker.status().ToString().c_str());
    return 2;
  }
  sb::testing::WaitUntil(
      [&] {
        return sb::testing::HttpRequest((*worker)->http_addr(), "GET", "/readyz").status == 200;
      },
      absl::Seconds(20));
  auto channel = grpc::CreateChannel((*broker)->grpc_addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::EventBroker::NewStub(channel);

  // Watches the job.* events: first job.started, N-th job.completed.
  std::atomic<int> completed{0};
  std::atomic<int64_t> first_start{0}, last_done{0};
  grpc::ClientContext watch_ctx;
  v1::SubscribeRequest watch;
  watch.add_types("job.started");
  watch.add_types("job.completed");
  auto reader = stub->Subscribe(&watch_ctx, watch);
  reader->WaitForInitialMetadata();
  std::thread watcher([&] {
    v1::Delivery d;
    while (reader->Read(&d)) {
      int64_t now = absl::GetCurrentTimeNanos();
      if (d.event().type() == "job.started") {
        int64_t zero = 0;
        first_start.compare_exchange_strong(zero, now);
      } else if (++completed == n) {
        last_done = now;
        break;
      }
    }
  });

  int64_t t0 = absl::GetCurrentTimeNanos();
  int chunk = absl::GetFlag(FLAGS_chunk);
  for (int i = 0; i < n; i += chunk) {
    v1::PublishBatchRequest req;
    for (int j = i; j < std::min(n, i + chunk); ++j) {
      auto* ev = req.add_events();
      ev->set_type("bench.noop");
      ev->set_source("job-bench");
      (*ev->mutable_data()->mutable_fields())["i"].set_number_value(j);
    }
    v1::PublishBatchResponse resp;
    grpc::ClientContext ctx;
    if (!stub->PublishBatch(&ctx, req, &resp).ok()) return 2;
  }
  double add_secs = (absl::GetCurrentTimeNanos() - t0) / 1e9;
  bool all = sb::testing::WaitUntil([&] { return completed.load() >= n; }, absl::Seconds(300));
  watch_ctx.TryCancel();
  watcher.join();
  double secs = (last_done.load() - first_start.load()) / 1e9;
  // The group must hold nothing: every triggering event was acked.
  uint64_t pending = 0;
  sb::testing::WaitUntil(
      [&] {
        v1::GetStatsResponse stats;
        grpc::ClientContext ctx;
        stub->GetStats(&ctx, {}, &stats);
        for (auto& g : stats.groups()) {
          if (g.name() == "job-worker") pending = g.pending();
        }
        return pending == 0;
      },
      absl::Seconds(10));
  std::printf(
      "{\"system\":\"switchboard\",\"figure\":\"job_loop_noop\",\"n\":%d,\"concurrency\":%d,"
      "\"add_secs\":%.3f,\"add_jobs_per_s\":%.0f,\"completed\":%d,\"complete\":%s,\"secs\":%.3f,"
      "\"jobs_per_s\":%.0f,\"group_pending_end\":%llu,\"events_per_job\":3}\n",
      n, absl::GetFlag(FLAGS_concurrency), add_secs, n / add_secs, completed.load(),
      all ? "true" : "false", secs, n / secs, static_cast<unsigned long long>(pending));
  return 0;
}
