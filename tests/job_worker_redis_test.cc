// Two real job-worker processes on one real redis-server (the broker on the
// same Redis): job records, stats and pause shared; a job one worker
// completed is not run again by the other; a queue's globalConcurrency caps
// its running jobs over both workers.
#include <algorithm>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"
#include "tests/testing/flag_checks.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

namespace switchboard {
namespace {

using google::protobuf::util::TimeUtil;
using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;

constexpr char kConfig[] = R"({
  "mappings": [
    {"eventType": "test.flaky", "jobType": "flaky", "queue": "test"},
    {"eventType": "test.sleep", "jobType": "sleep", "queue": "slow"}
  ],
  "queues": [
    {"name": "test", "attempts": 3, "backoff": {"initial": "0.2s", "multiplier": 2, "max": "1s"}},
    {"name": "slow", "concurrency": 3, "globalConcurrency": 2, "timeout": "60s"}
  ]
})";

class JobWorkerRedisIT : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = testing::RedisServer::Start();
    ASSERT_TRUE(r.ok()) << r.status();
    redis_ = *std::move(r);
    auto b = ServiceProcess::Start(BROKER_BIN, {"--store=" + redis_->url()});
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    broker_stub_ = broker::v1::EventBroker::NewStub(
        grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
    std::ofstream(dir_ + "/worker.json") << kConfig;
    for (int i = 0; i < 2; ++i) StartWorker(i);
  }

  void StartWorker(int i) {
    auto w = ServiceProcess::Start(
        WORKER_BIN, {"--broker=" + broker_->grpc_addr(), "--store=" + redis_->url(),
                     "--config=" + dir_ + "/worker.json", absl::StrCat("--worker_id=w", i),
                     absl::StrCat("--data_dir=", dir_, "/unused-", i)});
    ASSERT_TRUE(w.ok()) << w.status();
    workers_[i] = *std::move(w);
    ASSERT_TRUE(WaitUntil(
        [&] { return HttpRequest(workers_[i]->http_addr(), "GET", "/readyz").status == 200; },
        absl::Seconds(20)))
        << "worker not ready: " << workers_[i]->Log();
    stubs_[i] = jobs::v1::JobWorker::NewStub(
        grpc::CreateChannel(workers_[i]->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  void Publish(const std::string& type, const std::string& correlation, double number,
               const std::string& field, const std::string& id = "",
               const std::string& source = "checkout-service") {
    broker::v1::PublishRequest req;
    auto* ev = req.mutable_event();
    ev->set_type(type);
    ev->set_id(id);
    ev->set_source(source);
    ev->set_correlation_id(correlation);
    (*ev->mutable_data()->mutable_fields())[field].set_number_value(number);
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = broker_stub_->Publish(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  int CountType(const std::string& correlation, const std::string& type) {
    broker::v1::GetEventHistoryRequest req;
    req.set_correlation_id(correlation);
    req.set_limit(1000);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    broker_stub_->GetEventHistory(&ctx, req, &resp);
    int n = 0;
    for (const auto& e : resp.events()) n += e.type() == type;
    return n;
  }

  std::optional<jobs::v1::QueueStats> Stats(int worker, const std::string& queue) {
    jobs::v1::GetStatsResponse stats;
    grpc::ClientContext ctx;
    if (!stubs_[worker]->GetStats(&ctx, {}, &stats).ok()) return std::nullopt;
    for (const auto& q : stats.queues()) {
      if (q.name() == queue) return q;
    }
    return std::nullopt;
  }

  std::vector<jobs::v1::Job> List(int worker, const std::string& queue) {
    jobs::v1::ListJobsRequest req;
    req.set_queue(queue);
    req.set_limit(100);
    jobs::v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stubs_[worker]->ListJobs(&ctx, req, &resp).ok());
    return {resp.jobs().begin(), resp.jobs().end()};
  }

  std::string dir_ = testing::MakeTempDir();
  std::unique_ptr<testing::RedisServer> redis_;
  std::unique_ptr<ServiceProcess> broker_;
  std::unique_ptr<ServiceProcess> workers_[2];
  std::unique_ptr<jobs::v1::JobWorker::Stub> stubs_[2];
  std::unique_ptr<broker::v1::EventBroker::Stub> broker_stub_;
};

TEST_F(JobWorkerRedisIT, PauseStatsAndJobRecordsAreTheDeploymentsFromEitherWorker) {
  jobs::v1::PauseQueueRequest pause;
  pause.set_queue("test");
  jobs::v1::QueueStats qs;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs_[0]->PauseQueue(&ctx, pause, &qs).ok());
  }
  // The other worker follows within a second (more under the sanitizers).
#ifdef SWITCHBOARD_SANITIZER_BUILD
  const absl::Duration within = absl::Seconds(5);
#else
  const absl::Duration within = absl::Seconds(1);
#endif
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto s = Stats(1, "test");
        return s && s->paused();
      },
      within));
  Publish("test.flaky", "shared-1", 0, "failTimes");
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto a = Stats(0, "test"), b = Stats(1, "test");
        return a && b && a->waiting() == 1 && b->waiting() == 1;
      },
      absl::Seconds(10)))
      << "each worker shows the one waiting job, whichever holds it";
  EXPECT_EQ(CountType("shared-1", "job.started"), 0);
  jobs::v1::ResumeQueueRequest resume;
  resume.set_queue("test");
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs_[1]->ResumeQueue(&ctx, resume, &qs).ok());
  }
  ASSERT_TRUE(
      WaitUntil([&] { return CountType("shared-1", "job.completed") == 1; }, absl::Seconds(10)));
  for (int w = 0; w < 2; ++w) {
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto s = Stats(w, "test");
          return s && s->completed() == 1 && s->waiting() == 0 && !s->paused();
        },
        absl::Seconds(5)))
        << "worker " << w;
    std::vector<jobs::v1::Job> jobs = List(w, "test");
    ASSERT_EQ(jobs.size(), 1u) << "worker " << w;
    EXPECT_EQ(jobs[0].status(), jobs::v1::JOB_STATUS_COMPLETED);
    jobs::v1::GetJobRequest get;
    get.set_id(jobs[0].id());
    jobs::v1::Job job;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs_[w]->GetJob(&ctx, get, &job).ok());
    EXPECT_EQ(job.correlation_id(), "shared-1");
  }
}

// The same trigger id from another source is a new event to the broker but
// the same job to the workers: what the redelivery of a completed job looks
// like to the worker that gets it.
TEST_F(JobWorkerRedisIT, AJobCompletedByOneWorkerIsNotRunAgainByTheOther) {
  Publish("test.flaky", "once-1", 0, "failTimes", "evt_once", "source-a");
  ASSERT_TRUE(
      WaitUntil([&] { return CountType("once-1", "job.completed") == 1; }, absl::Seconds(15)));
  std::vector<jobs::v1::Job> jobs = List(0, "test");
  ASSERT_EQ(jobs.size(), 1u);
  int ran_on = jobs[0].worker_id() == "w0" ? 0 : 1;
  ASSERT_EQ(workers_[ran_on]->Terminate(), 0);
  int other = 1 - ran_on;
  Publish("test.flaky", "once-1", 0, "failTimes", "evt_once", "source-b");
  // The survivor takes it, finds the job completed, and acks it unrun.
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string metrics = HttpRequest(workers_[other]->http_addr(), "GET", "/metrics").body;
        return metrics.find("outcome=\"skipped_duplicate\",queue=\"test\"") != std::string::npos;
      },
      absl::Seconds(15)))
      << workers_[other]->Log();
  EXPECT_EQ(CountType("once-1", "job.started"), 1) << workers_[other]->Log();
  EXPECT_EQ(CountType("once-1", "job.completed"), 1);
}

TEST_F(JobWorkerRedisIT, GlobalConcurrencyCapsRunningJobsOverBothWorkers) {
  constexpr int kJobs = 8;
  for (int i = 0; i < kJobs; ++i) Publish("test.sleep", absl::StrCat("cap-", i), 400, "sleepMs");
  std::vector<jobs::v1::Job> done;
  ASSERT_TRUE(WaitUntil(
      [&] {
        done = List(0, "slow");
        return done.size() == kJobs &&
               std::all_of(done.begin(), done.end(), [](const jobs::v1::Job& j) {
                 return j.status() == jobs::v1::JOB_STATUS_COMPLETED;
               });
      },
      absl::Seconds(60)));
  // Running intervals from the records: at most 2 at any moment, over both
  // workers (3 each would be allowed by their own concurrency).
  std::vector<std::pair<int64_t, int>> edges;
  for (const auto& j : done) {
    edges.push_back({TimeUtil::TimestampToMicroseconds(j.started_at()), +1});
    edges.push_back({TimeUtil::TimestampToMicroseconds(j.finished_at()), -1});
  }
  std::sort(edges.begin(), edges.end());  // an end before a start at the same time
  int running = 0, most = 0;
  for (const auto& [t, d] : edges) most = std::max(most, running += d);
  EXPECT_LE(most, 2);
  EXPECT_EQ(most, 2) << "the cap, not less, should have been in use";
  auto stats = Stats(1, "slow");
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->global_concurrency(), 2u);
}

// kill -9 of one of two workers with orders in flight: every order still
// completes, each order is created once, and the survivor lists every job.
TEST_F(JobWorkerRedisIT, KillDashNineOfOneWorkerCompletesEveryOrderOnce) {
  constexpr int kOrders = 100;
  for (int i = 0; i < kOrders; ++i) {
    broker::v1::PublishRequest req;
    auto* ev = req.mutable_event();
    ev->set_type("order.checkout_initiated");
    ev->set_source("checkout-service");
    ev->set_correlation_id(absl::StrCat("k9r-", i));
    (*ev->mutable_data()->mutable_fields())["total"].set_number_value(20);
    (*ev->mutable_data()->mutable_fields())["customerId"].set_string_value("cus_k");
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(broker_stub_->Publish(&ctx, req, &resp).ok());
  }
  auto completed = [&] {
    broker::v1::GetEventHistoryRequest req;
    req.add_types("order.completed");
    req.set_limit(1000);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    broker_stub_->GetEventHistory(&ctx, req, &resp);
    return resp.events_size();
  };
  ASSERT_TRUE(WaitUntil([&] { return completed() >= 3; }, absl::Seconds(30)));
  workers_[0]->Kill9();
  EXPECT_LT(completed(), kOrders) << "the kill came after the work: nothing was in flight";
  StartWorker(0);
  ASSERT_TRUE(WaitUntil([&] { return completed() >= kOrders; }, absl::Seconds(90)))
      << completed() << " of " << kOrders;
  for (int i = 0; i < kOrders; ++i) {
    std::string c = absl::StrCat("k9r-", i);
    EXPECT_EQ(CountType(c, "order.created"), 1) << c << " was created twice";
    EXPECT_EQ(CountType(c, "order.completed"), 1) << c;
  }
  jobs::v1::ListJobsRequest req;
  req.set_status(jobs::v1::JOB_STATUS_COMPLETED);
  req.set_limit(1000);
  jobs::v1::ListJobsResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stubs_[1]->ListJobs(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.jobs_size(), 4 * kOrders) << "4 jobs per order, listed by either worker";
}

TEST(JobWorkerRedisConfigTest, BadStorageFlagsExitTwoNamingTheFlag) {
  testing::RedisOptions opts;
  opts.password = "right-password";
  auto redis = testing::RedisServer::Start(opts);
  ASSERT_TRUE(redis.ok()) << redis.status();
  std::string addr = (*redis)->addr();
  testing::ExpectEachExitsTwoNamingTheFlag(
      WORKER_BIN,
      {"--grpc_addr=127.0.0.1:0", "--http_addr=127.0.0.1:0", "--broker=127.0.0.1:1",
       "--data_dir=" + testing::MakeTempDir()},
      {
          {{"--store=mongodb://u:not-it@" + addr}, "store: 'mongodb://'"},
          {{"--store=redis://" + addr, "--redis_prefix=bad{prefix}"}, "redis_prefix"},
          {{"--store=redis://" + addr, "--redis_password_file=/no/such/file"},
           "redis_password_file"},
          {{"--store=redis://:not-it@" + addr}, "authentication failed"},
          {{"--store=redis://" + addr}, "authentication"},
          {{"--store=redis://" + addr, "--redis_min_replicas=99"}, "redis_min_replicas"},
          {{"--job_retention=1s"}, "job_retention"},
      },
      "not-it");
}

}  // namespace
}  // namespace switchboard
