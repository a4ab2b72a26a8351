// The real broker and job-worker binaries: the order flow end to end, retries,
// final failures, kill -9 with orders in flight, SIGTERM drain, pause/resume.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"
#include "tests/testing/backup.h"
#include "tests/testing/process.h"

namespace switchboard {
namespace {

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
    {"name": "slow", "concurrency": 1, "timeout": "120s"}
  ],
  "paymentRule": {"failAboveTotal": 1000}
})";

class JobWorkerIT : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + dir_ + "/broker"});
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    broker_stub_ = broker::v1::EventBroker::NewStub(
        grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
    std::ofstream(dir_ + "/worker.json") << kConfig;
    StartWorker();
  }

  void StartWorker(const std::string& drain_timeout = "10s") {
    auto w = ServiceProcess::Start(
        WORKER_BIN, {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/worker",
                     "--config=" + dir_ + "/worker.json", "--drain_timeout=" + drain_timeout});
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = *std::move(w);
    ASSERT_TRUE(
        WaitUntil([&] { return HttpRequest(worker_->http_addr(), "GET", "/readyz").status == 200; },
                  absl::Seconds(20)))
        << "worker not ready: " << worker_->Log();
    jobs_stub_ = jobs::v1::JobWorker::NewStub(
        grpc::CreateChannel(worker_->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  uint64_t Publish(const std::string& type, const std::string& correlation,
                   const std::map<std::string, double>& numbers = {},
                   const std::map<std::string, std::string>& strings = {}) {
    broker::v1::PublishRequest req;
    auto* ev = req.mutable_event();
    ev->set_type(type);
    ev->set_source("checkout-service");
    ev->set_correlation_id(correlation);
    for (auto& [k, v] : numbers) (*ev->mutable_data()->mutable_fields())[k].set_number_value(v);
    for (auto& [k, v] : strings) (*ev->mutable_data()->mutable_fields())[k].set_string_value(v);
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = broker_stub_->Publish(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.sequence();
  }

  // Oldest first.
  std::vector<events::v1::Event> History(const std::string& correlation) {
    broker::v1::GetEventHistoryRequest req;
    req.set_correlation_id(correlation);
    req.set_limit(1000);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    broker_stub_->GetEventHistory(&ctx, req, &resp);
    std::vector<events::v1::Event> out(resp.events().rbegin(), resp.events().rend());
    return out;
  }

  static std::vector<std::string> Types(const std::vector<events::v1::Event>& evs) {
    std::vector<std::string> t;
    for (auto& e : evs) t.push_back(e.type());
    return t;
  }
  static int Count(const std::vector<events::v1::Event>& evs, const std::string& type) {
    int n = 0;
    for (auto& e : evs) n += e.type() == type;
    return n;
  }
  static std::string Str(const events::v1::Event& e, const std::string& key) {
    auto it = e.data().fields().find(key);
    return it == e.data().fields().end() ? "" : it->second.string_value();
  }
  static double Num(const events::v1::Event& e, const std::string& key) {
    auto it = e.data().fields().find(key);
    return it == e.data().fields().end() ? -1 : it->second.number_value();
  }

  bool WaitForType(const std::string& correlation, const std::string& type, int n = 1,
                   absl::Duration timeout = absl::Seconds(30)) {
    return WaitUntil([&] { return Count(History(correlation), type) >= n; }, timeout,
                     absl::Milliseconds(20));
  }

  std::string dir_ = testing::MakeTempDir();
  std::unique_ptr<ServiceProcess> broker_, worker_;
  std::unique_ptr<broker::v1::EventBroker::Stub> broker_stub_;
  std::unique_ptr<jobs::v1::JobWorker::Stub> jobs_stub_;
};

TEST_F(JobWorkerIT, CheckoutRunsTheWholeOrderFlowInCausalOrder) {
  Publish("order.checkout_initiated", "flow-1", {{"total", 99.5}}, {{"customerId", "cus_1"}});
  ASSERT_TRUE(WaitForType("flow-1", "order.completed"))
      << ::testing::PrintToString(Types(History("flow-1")));
  // The last job.completed (send-confirmation) follows order.completed.
  ASSERT_TRUE(WaitForType("flow-1", "job.completed", 4));
  std::vector<events::v1::Event> h = History("flow-1");
  std::vector<std::string> flow;
  for (auto& e : h) {
    if (e.type().rfind("order.", 0) == 0) flow.push_back(e.type());
  }
  EXPECT_THAT(flow, ::testing::ElementsAre("order.checkout_initiated", "order.created",
                                           "order.payment_processing", "order.payment_completed",
                                           "order.inventory_updated", "order.confirmation_sent",
                                           "order.completed"));
  // One job.enqueued, job.started and job.completed per job, started before
  // completed, and each job after the event that triggered it.
  std::map<std::string, std::map<std::string, uint64_t>> jobs;  // jobType -> type -> seq
  std::map<std::string, uint64_t> seq_of_event;
  for (auto& e : h) {
    seq_of_event[e.id()] = e.sequence();
    if (e.type().rfind("job.", 0) == 0) {
      EXPECT_EQ(jobs[Str(e, "jobType")].count(e.type()), 0u) << "two " << e.type();
      jobs[Str(e, "jobType")][e.type()] = e.sequence();
      EXPECT_EQ(Str(e, "queueName").empty(), false);
      EXPECT_EQ(e.correlation_id(), "flow-1");
      EXPECT_LT(seq_of_event[Str(e, "triggerEventId")], e.sequence());
    }
  }
  for (const char* t :
       {"order-creation", "payment-processing", "inventory-update", "send-confirmation"}) {
    ASSERT_EQ(jobs[t].size(), 3u) << t;
    EXPECT_LT(jobs[t]["job.enqueued"], jobs[t]["job.started"]) << t;
    EXPECT_LT(jobs[t]["job.started"], jobs[t]["job.completed"]) << t;
  }
  const events::v1::Event* created = nullptr;
  for (auto& e : h) {
    if (e.type() == "order.created") created = &e;
  }
  ASSERT_NE(created, nullptr);
  EXPECT_THAT(Str(*created, "orderId"), ::testing::StartsWith("ord_"));
  EXPECT_EQ(Str(*created, "status"), "created");
  EXPECT_EQ(Str(*created, "customerId"), "cus_1");
  EXPECT_GE(Num(*created, "orderNumber"), 1);
  EXPECT_EQ(created->subject(), Str(*created, "orderId"));
  // Every order.* the worker emits has the original design's
  // OrderStatusWebhook shape; its CRM example reads customerId and total
  // from order.completed.
  std::map<std::string, std::string> status_of;
  for (auto& e : h) {
    if (e.source() != "job-worker" || e.type().rfind("order.", 0) != 0) continue;
    for (const char* k : {"orderId", "orderNumber", "customerId", "status", "statusChangedAt",
                          "total", "currency", "items", "metadata"}) {
      EXPECT_TRUE(e.data().fields().count(k)) << e.type() << " lacks " << k;
    }
    status_of[e.type()] = Str(e, "status");
    absl::Time changed;
    std::string err;
    EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, Str(e, "statusChangedAt"), &changed, &err))
        << Str(e, "statusChangedAt");
    if (e.type() == "order.completed") {
      EXPECT_EQ(Str(e, "customerId"), "cus_1");
      EXPECT_EQ(Num(e, "total"), 99.5);
    }
    if (e.type() == "order.payment_completed" || e.type() == "order.completed") {
      const auto& pay = e.data().fields().at("paymentInfo").struct_value().fields();
      EXPECT_FALSE(pay.at("paymentId").string_value().empty()) << e.type();
      EXPECT_EQ(pay.at("status").string_value(), "captured");
    }
  }
  EXPECT_EQ(status_of,
            (std::map<std::string, std::string>{{"order.created", "created"},
                                                {"order.payment_processing", "payment_processing"},
                                                {"order.payment_completed", "paid"},
                                                {"order.inventory_updated", "inventory_reserved"},
                                                {"order.confirmation_sent", "confirmed"},
                                                {"order.completed", "completed"}}));
  // Derived ids keep a fixed length to the end of the order (they used to
  // grow with every step: evt_….order-creation.1.payment-processing.2…).
  for (auto& e : h) {
    if (e.source() != "job-worker") continue;
    EXPECT_LE(e.id().size(), 4u + 40u) << e.type() << " " << e.id();
    if (e.type().rfind("job.", 0) == 0) {
      EXPECT_LE(Str(e, "jobId").size(), 4u + 40u) << Str(e, "jobId");
      EXPECT_EQ(Str(e, "status"), e.type().substr(4)) << "status names the step";
    }
  }
}

// One data_dir belongs to one worker: a second one given it is refused at
// start, naming the file, and the first runs on.
TEST_F(JobWorkerIT, ASecondWorkerOnTheSameDataDirIsRefused) {
  auto second =
      ServiceProcess::Start(WORKER_BIN,
                            {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/worker",
                             "--config=" + dir_ + "/worker.json"},
                            absl::Seconds(20));
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr("jobs.db' is in use by another process"));
  Publish("order.created", "order-solo", {{"total", 20}});
  EXPECT_TRUE(WaitForType("order-solo", "job.completed")) << worker_->Log();
}

// The worker's jobs.db, copied through its admin port while it runs, holds
// the jobs it has completed.
TEST_F(JobWorkerIT, BackupHoldsTheJobsRun) {
  Publish("order.created", "order-backup", {{"total", 20}});
  ASSERT_TRUE(WaitForType("order-backup", "job.completed")) << worker_->Log();
  std::string copy = testing::FetchBackup(worker_->http_addr(), "jobs.db", testing::MakeTempDir());
  ASSERT_FALSE(copy.empty());
  EXPECT_EQ(testing::IntegrityCheck(copy), "ok");
  EXPECT_GE(testing::QueryInt(copy, "SELECT count(*) FROM jobs"), 1);
}

TEST_F(JobWorkerIT, PaymentRuleFailsThePaymentAndTheOrderStops) {
  Publish("order.checkout_initiated", "flow-big", {{"total", 5000}}, {{"customerId", "cus_2"}});
  ASSERT_TRUE(WaitForType("flow-big", "order.payment_failed"));
  // The payment job completed (the failure is a business outcome), and
  // nothing follows it.
  ASSERT_TRUE(WaitForType("flow-big", "job.completed", 2));
  std::vector<events::v1::Event> h = History("flow-big");
  EXPECT_EQ(Count(h, "order.payment_completed"), 0);
  EXPECT_EQ(Count(h, "order.inventory_updated"), 0);
  EXPECT_EQ(Count(h, "order.completed"), 0);
}

TEST_F(JobWorkerIT, FlakyJobFailsTwiceThenCompletesOnAttempt3) {
  Publish("test.flaky", "flaky-1", {{"failTimes", 2}});
  ASSERT_TRUE(WaitForType("flaky-1", "job.completed"));
  std::vector<events::v1::Event> h = History("flaky-1");
  std::vector<const events::v1::Event*> failed;
  for (auto& e : h) {
    if (e.type() == "job.failed") failed.push_back(&e);
  }
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(Num(*failed[0], "attempt"), 1);
  EXPECT_EQ(Num(*failed[1], "attempt"), 2);
  for (auto* f : failed) {
    EXPECT_FALSE(Str(*f, "nextRetryAt").empty());
    EXPECT_THAT(Str(*f, "error"), ::testing::HasSubstr("fails on purpose"));
  }
  EXPECT_EQ(Num(h.back(), "attempt"), 3);
  EXPECT_EQ(Count(h, "job.started"), 3);
}

TEST_F(JobWorkerIT, AlwaysFailingJobFailsFinallyIsAckedAndListed) {
  Publish("test.flaky", "doomed-1", {{"failTimes", -1}});
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (auto& e : History("doomed-1")) {
          if (e.type() == "job.failed" && e.data().fields().at("final").bool_value()) return true;
        }
        return false;
      },
      absl::Seconds(30)));
  EXPECT_EQ(Count(History("doomed-1"), "job.failed"), 3);
  jobs::v1::ListJobsRequest req;
  req.set_status(jobs::v1::JOB_STATUS_FAILED);
  jobs::v1::ListJobsResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(jobs_stub_->ListJobs(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.jobs_size(), 1);
  EXPECT_EQ(resp.jobs(0).attempt(), 3u);
  EXPECT_EQ(resp.jobs(0).correlation_id(), "doomed-1");
  // The triggering event was acked: the group holds nothing.
  ASSERT_TRUE(WaitUntil(
      [&] {
        broker::v1::GetStatsResponse stats;
        grpc::ClientContext c;
        broker_stub_->GetStats(&c, {}, &stats);
        for (auto& g : stats.groups()) {
          if (g.name() == "job-worker") return g.pending() == 0;
        }
        return false;
      },
      absl::Seconds(10)));
}

TEST_F(JobWorkerIT, KillDashNineWithFiftyOrdersInFlightCompletesEveryOrderOnce) {
  // With inventory paused no order can finish before the kill, however fast
  // this machine runs the rest: the kill always finds work in flight (jobs
  // running, waiting and held), not a drained worker.
  auto set_inventory = [&](bool paused) {
    grpc::ClientContext ctx;
    jobs::v1::QueueStats stats;
    grpc::Status s;
    if (paused) {
      jobs::v1::PauseQueueRequest req;
      req.set_queue("inventory");
      s = jobs_stub_->PauseQueue(&ctx, req, &stats);
    } else {
      jobs::v1::ResumeQueueRequest req;
      req.set_queue("inventory");
      s = jobs_stub_->ResumeQueue(&ctx, req, &stats);
    }
    ASSERT_TRUE(s.ok()) << s.error_message();
  };
  set_inventory(true);
  for (int i = 0; i < 50; ++i) {
    Publish("order.checkout_initiated", absl::StrCat("k9-", i), {{"total", i == 7 ? 4000.0 : 20.0}},
            {{"customerId", "cus_k"}});
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        broker::v1::GetEventHistoryRequest req;
        req.add_types("order.created");
        req.set_limit(100);
        broker::v1::GetEventHistoryResponse resp;
        grpc::ClientContext ctx;
        broker_stub_->GetEventHistory(&ctx, req, &resp);
        return resp.events_size() >= 3;
      },
      absl::Seconds(30)));
  worker_->Kill9();
  int completed_at_kill = 0;
  for (int i = 0; i < 50; ++i) {
    completed_at_kill += Count(History(absl::StrCat("k9-", i)), "order.completed") > 0;
  }
  EXPECT_EQ(completed_at_kill, 0) << "an order finished with inventory paused";
  StartWorker();  // the pause outlives the process: resume it
  set_inventory(false);
  for (int i = 0; i < 50; ++i) {
    std::string c = absl::StrCat("k9-", i);
    std::string last = i == 7 ? "order.payment_failed" : "order.completed";
    ASSERT_TRUE(WaitForType(c, last, 1, absl::Seconds(60)))
        << c << ": " << ::testing::PrintToString(Types(History(c)));
    EXPECT_EQ(Count(History(c), "order.created"), 1) << c << " was created twice";
  }
}

TEST_F(JobWorkerIT, SigtermLetsTheRunningJobFinishAndHandsBackTheRest) {
  Publish("test.sleep", "drain-1", {{"sleepMs", 1500}});
  Publish("test.sleep", "drain-2", {{"sleepMs", 10}});  // waits: queue "slow" runs one at a time
  ASSERT_TRUE(WaitForType("drain-1", "job.started"));
  EXPECT_EQ(worker_->Terminate(absl::Seconds(30)), 0);
  EXPECT_EQ(Count(History("drain-1"), "job.completed"), 1) << "the running job finished";
  EXPECT_EQ(Count(History("drain-2"), "job.completed"), 0);
  StartWorker();
  ASSERT_TRUE(WaitForType("drain-2", "job.completed")) << "the waiting job was not lost";
}

// A job still running when --drain_timeout runs out: its handler is told to
// stop, its event goes back to the group, and the process exits by itself,
// cleanly (threads joined, stores closed), long before the job would end.
TEST_F(JobWorkerIT, SigtermPastTheDrainTimeoutStopsTheJobExitsCleanlyAndHandsItBack) {
  ASSERT_EQ(worker_->Terminate(absl::Seconds(30)), 0);
  StartWorker("1s");
  // 60 s of work; the queue's timeout (120 s) would let it run to the end.
  Publish("test.sleep", "drain-long", {{"sleepMs", 60000}});
  ASSERT_TRUE(WaitForType("drain-long", "job.started"));
  absl::Time sigterm = absl::Now();
  // Far less than the job's 60 s, with room for sanitizer builds.
  int code = worker_->Terminate(absl::Seconds(20));
  absl::Duration took = absl::Now() - sigterm;
  std::string log = worker_->Log();
  ASSERT_EQ(code, 0) << "not exited by itself with 0 (-1: still running after 20 s): " << log;
  EXPECT_LT(took, absl::Seconds(20));
  std::string drained;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "\"msg\":\"worker drained\"")) drained = std::string(line);
  }
  EXPECT_THAT(drained, ::testing::HasSubstr("\"all_jobs_finished\":false")) << log;
  EXPECT_THAT(drained, ::testing::HasSubstr("\"handed_back\":1")) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("\"msg\":\"stopped\"")) << "main did not return";
  // Destructors ran (no _exit): closing the job store's last connection
  // checkpoints and removes its write-ahead log.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/worker/jobs.db-wal"))
      << "the job store was not closed";
  EXPECT_EQ(Count(History("drain-long"), "job.completed"), 0);
  EXPECT_EQ(Count(History("drain-long"), "job.failed"), 0) << "a stopped job is not a failure";

  // The event was handed back: the next worker runs the job.
  StartWorker();
  ASSERT_TRUE(WaitUntil(
      [&] {
        jobs::v1::ListJobsRequest req;
        req.set_correlation_id("drain-long");
        req.set_status(jobs::v1::JOB_STATUS_ACTIVE);
        jobs::v1::ListJobsResponse resp;
        grpc::ClientContext ctx;
        return jobs_stub_->ListJobs(&ctx, req, &resp).ok() && resp.jobs_size() == 1;
      },
      absl::Seconds(30)))
      << worker_->Log();
}

TEST_F(JobWorkerIT, PausedQueueHoldsItsJobsUntilResumed) {
  jobs::v1::PauseQueueRequest pause;
  pause.set_queue("test");
  jobs::v1::QueueStats qs;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(jobs_stub_->PauseQueue(&ctx, pause, &qs).ok());
    EXPECT_TRUE(qs.paused());
  }
  Publish("test.flaky", "paused-1", {{"failTimes", 0}});
  ASSERT_TRUE(WaitUntil(
      [&] {
        jobs::v1::GetStatsResponse stats;
        grpc::ClientContext ctx;
        jobs_stub_->GetStats(&ctx, {}, &stats);
        for (auto& q : stats.queues()) {
          if (q.name() == "test") return q.waiting() == 1;
        }
        return false;
      },
      absl::Seconds(10)));
  EXPECT_EQ(Count(History("paused-1"), "job.started"), 0);
  jobs::v1::ResumeQueueRequest resume;
  resume.set_queue("test");
  grpc::ClientContext ctx;
  ASSERT_TRUE(jobs_stub_->ResumeQueue(&ctx, resume, &qs).ok());
  ASSERT_TRUE(WaitForType("paused-1", "job.completed"));
  grpc::ClientContext bad_ctx;
  pause.set_queue("nope");
  EXPECT_EQ(jobs_stub_->PauseQueue(&bad_ctx, pause, &qs).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace switchboard
