// Job loop benchmark: N no-op jobs through the whole loop (event published ->
// job run -> job.* events published -> event acked) with the worker's queue
// concurrency at 50, like BullMQ's no-op figure in ../shared/peers. Starts the
// real broker and worker (with --redis, both on one fresh redis-server, as
// BullMQ runs on its Redis); prints one JSON line. As BullMQ's bench adds its
// jobs before its worker starts, the N events are published before the
// worker starts (its new group reads from the earliest event), and the
// figure runs from the first job.started to the N-th job.completed
// (--add_first=false: the worker starts first and runs while they are
// published).
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
#include "tests/testing/redis_server.h"

ABSL_FLAG(int, jobs, 20000, "no-op jobs");
ABSL_FLAG(int, concurrency, 50, "the worker queue's concurrency");
ABSL_FLAG(int, chunk, 1000, "events per PublishBatch when adding jobs");
ABSL_FLAG(bool, add_first, true,
          "publish every event before the worker starts, as BullMQ's bench adds its jobs "
          "before its worker starts; false: while the worker runs");
ABSL_FLAG(std::string, redis, "",
          "run the broker and the worker on one fresh redis-server with this appendfsync "
          "(everysec, always), like BullMQ on its Redis; empty: embedded stores");

namespace sb = switchboard;
namespace v1 = switchboard::broker::v1;

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int n = absl::GetFlag(FLAGS_jobs);
  std::string dir = sb::testing::MakeTempDir();
  std::unique_ptr<sb::testing::RedisServer> redis;
  std::vector<std::string> store_args;
  if (std::string fsync = absl::GetFlag(FLAGS_redis); !fsync.empty()) {
    sb::testing::RedisOptions opts;
    opts.appendfsync = fsync;
    // As the peers' Redis (../shared/peers/run_all.sh): no AOF rewrite, whose
    // fork and copy of the whole data set would land in the measured window.
    opts.extra_config = {"auto-aof-rewrite-percentage 0"};
    auto r = sb::testing::RedisServer::Start(opts);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 2;
    }
    redis = *std::move(r);
    store_args.push_back("--store=" + redis->url());
  }
  std::vector<std::string> broker_args = {"--data_dir=" + dir + "/broker", "--log_level=warn"};
  broker_args.insert(broker_args.end(), store_args.begin(), store_args.end());
  auto broker = sb::testing::ServiceProcess::Start(BROKER_BIN, broker_args);
  if (!broker.ok()) {
    std::fprintf(stderr, "%s\n", broker.status().ToString().c_str());
    return 2;
  }
  std::ofstream(dir + "/bench.json") << absl::StrFormat(
      R"({"replaceDefaultMappings": true,
          "mappings": [{"eventType": "bench.noop", "jobType": "noop", "queue": "bench"}],
          "queues": [{"name": "bench", "concurrency": %d}]})",
      absl::GetFlag(FLAGS_concurrency));
  auto channel = grpc::CreateChannel((*broker)->grpc_addr(), grpc::InsecureChannelCredentials());
  auto stub = v1::EventBroker::NewStub(channel);

  // Watches the job.* events: the first job.started, on a subscription
  // dropped after it (reading all N would take the bench's CPU from the loop
  // it measures), and the N-th job.completed.
  std::atomic<int> completed{0};
  std::atomic<int64_t> first_start{0}, last_done{0};
  grpc::ClientContext start_ctx;
  v1::SubscribeRequest start_watch;
  start_watch.add_types("job.started");
  auto start_reader = stub->Subscribe(&start_ctx, start_watch);
  start_reader->WaitForInitialMetadata();
  std::thread start_watcher([&] {
    v1::Delivery d;
    if (start_reader->Read(&d)) first_start = absl::GetCurrentTimeNanos();
    start_ctx.TryCancel();
    while (start_reader->Read(&d)) {
    }
  });
  grpc::ClientContext watch_ctx;
  v1::SubscribeRequest watch;
  watch.add_types("job.completed");
  auto reader = stub->Subscribe(&watch_ctx, watch);
  reader->WaitForInitialMetadata();
  std::thread watcher([&] {
    v1::Delivery d;
    while (reader->Read(&d)) {
      if (++completed == n) {
        last_done = absl::GetCurrentTimeNanos();
        break;
      }
    }
  });

  bool add_first = absl::GetFlag(FLAGS_add_first);
  std::vector<std::string> worker_args = {"--broker=" + (*broker)->grpc_addr(),
                                          "--data_dir=" + dir + "/worker",
                                          "--config=" + dir + "/bench.json", "--log_level=warn"};
  if (add_first) worker_args.push_back("--start=earliest");
  worker_args.insert(worker_args.end(), store_args.begin(), store_args.end());
  std::unique_ptr<sb::testing::ServiceProcess> worker;
  auto start_worker = [&] {
    auto started = sb::testing::ServiceProcess::Start(WORKER_BIN, worker_args);
    if (!started.ok()) {
      std::fprintf(stderr, "%s\n", started.status().ToString().c_str());
      return false;
    }
    worker = *std::move(started);
    return sb::testing::WaitUntil(
        [&] {
          return sb::testing::HttpRequest(worker->http_addr(), "GET", "/readyz").status == 200;
        },
        absl::Seconds(20));
  };
  if (!add_first && !start_worker()) return 2;
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
  if (add_first && !start_worker()) return 2;
  bool all = sb::testing::WaitUntil([&] { return completed.load() >= n; }, absl::Seconds(300));
  watch_ctx.TryCancel();
  watcher.join();
  start_ctx.TryCancel();
  start_watcher.join();
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
      "\"jobs_per_s\":%.0f,\"group_pending_end\":%llu,\"events_per_job\":3,\"added_first\":%s%s}\n",
      n, absl::GetFlag(FLAGS_concurrency), add_secs, n / add_secs, completed.load(),
      all ? "true" : "false", secs, n / secs, static_cast<unsigned long long>(pending),
      add_first ? "true" : "false",
      redis == nullptr ? ""
                       : absl::StrCat(",\"store\":\"redis\",\"appendfsync\":\"",
                                      absl::GetFlag(FLAGS_redis), "\"")
                             .c_str());
  return 0;
}
