// Worker logic: the retry/ack protocol, batches of deliveries, timeouts,
// pauses and priorities against a fake broker
// client (the real broker is exercised in tests/job_worker_integration_test).
#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/broker_client/null_broker_client.h"
#include "libs/common/ids.h"
#include "services/job_worker/handlers.h"
#include "services/job_worker/sqlite_job_store.h"
#include "services/job_worker/testing/memory_job_store.h"
#include "services/job_worker/worker.h"
#include "services/job_worker/worker_config.h"
#include "tests/testing/process.h"

namespace switchboard::jobs {
namespace {

using ::testing::HasSubstr;

// A broker client that records what the worker does.
class FakeBrokerClient : public NullBrokerClient {
 public:
  absl::StatusOr<broker::v1::PublishResponse> Publish(events::v1::Event event,
                                                      absl::Duration) override {
    absl::MutexLock lock(&mu_);
    published_.push_back(event);
    return broker::v1::PublishResponse();
  }
  absl::StatusOr<broker::v1::PublishBatchResponse> PublishBatch(std::vector<events::v1::Event> evs,
                                                                absl::Duration) override {
    absl::MutexLock lock(&mu_);
    auto open = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !blocked_; };
    mu_.Await(absl::Condition(&open));
    for (auto& e : evs) {
      if (!refused_subject_.empty() && e.subject() == refused_subject_) {
        return absl::InvalidArgumentError("events: refused subject");
      }
    }
    for (auto& e : evs) published_.push_back(e);
    return broker::v1::PublishBatchResponse();
  }
  absl::Status Ack(const std::string&, const std::vector<std::string>& ids,
                   absl::Duration) override {
    absl::MutexLock lock(&mu_);
    for (auto& id : ids) acked_.push_back(id);
    return absl::OkStatus();
  }
  absl::Status Nack(const std::string&, const std::vector<std::string>& ids, absl::Duration delay,
                    absl::string_view reason, absl::Duration) override {
    absl::MutexLock lock(&mu_);
    for (auto& id : ids) nacked_.push_back({id, delay});
    nack_reasons_.push_back(std::string(reason));
    return absl::OkStatus();
  }
  template <typename F>
  bool WaitFor(F cond, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto c = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cond(*this); };
    return mu_.AwaitWithTimeout(absl::Condition(&c), timeout);
  }
  std::vector<events::v1::Event> published_;
  std::vector<std::string> acked_;
  std::vector<std::pair<std::string, absl::Duration>> nacked_;
  std::vector<std::string> nack_reasons_;
  // Batches with an event of this subject are refused (INVALID_ARGUMENT).
  std::string refused_subject_;
  // While set, publishes wait.
  bool blocked_ = false;
  absl::Mutex mu_;
};

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Build(R"({"mappings":[{"eventType":"test.flaky","jobType":"flaky",
        "queue":"test"}],"queues":[{"name":"test","attempts":3,
        "backoff":{"initial":"1s","multiplier":2,"max":"10s","jitter":0.000001}}]})");
  }

  void Build(const std::string& config_json, Clock* clock = nullptr) {
    if (handlers_.Types().empty()) RegisterBuiltinHandlers(&handlers_);
    dir_ = std::filesystem::temp_directory_path() /
           ("jw-test-" + std::to_string(getpid()) + "-" + std::to_string(rand()));
    auto store = SqliteJobStore::Open(dir_);
    ASSERT_TRUE(store.ok());
    store_ = *std::move(store);
    auto parsed = ParseWorkerConfig(config_json, "w.json");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    auto config = ResolveWorkerConfig(*parsed, handlers_.Types());
    ASSERT_TRUE(config.ok());
    WorkerOptions options;
    options.worker_id = "w1";
    worker_ = std::make_unique<Worker>(options, *config, &handlers_, store_.get(), &broker_,
                                       clock ? clock : &clock_, &metrics_);
    ASSERT_TRUE(worker_->Start().ok());
  }
  void TearDown() override {
    worker_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Rebuild(const std::string& config_json, Clock* clock = nullptr) {
    TearDown();
    Build(config_json, clock);
  }
  broker::v1::Delivery Delivery(const std::string& id, int fail_times, int attempt) {
    broker::v1::Delivery d;
    d.mutable_event()->set_id(id);
    d.mutable_event()->set_type("test.flaky");
    d.mutable_event()->set_correlation_id("corr-9");
    (*d.mutable_event()->mutable_data()->mutable_fields())["failTimes"].set_number_value(
        fail_times);
    d.set_ack_id(absl::StrCat("1-", attempt));
    d.set_delivery_attempt(attempt);
    return d;
  }
  std::vector<std::string> Types() {
    absl::MutexLock lock(&broker_.mu_);
    std::vector<std::string> t;
    for (auto& e : broker_.published_) t.push_back(e.type());
    return t;
  }

  HandlerRegistry handlers_;
  std::filesystem::path dir_;
  std::unique_ptr<SqliteJobStore> store_;
  FakeBrokerClient broker_;
  FakeClock clock_;
  prometheus::Registry registry_;
  WorkerMetrics metrics_{registry_};
  std::unique_ptr<Worker> worker_;
};

TEST_F(WorkerTest, FailsTwiceThenSucceedsWithBackoffAndAcksOnlyAtTheEnd) {
  worker_->OnDelivery(Delivery("evt_A", 2, 1));
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.nacked_.size() == 1; }));
  EXPECT_NEAR(absl::ToDoubleSeconds(broker_.nacked_[0].second), 1.0, 0.001)
      << "first retry after backoff.initial";
  // The broker keeps the reason: a dead letter shows the job's error.
  EXPECT_THAT(broker_.nack_reasons_[0], HasSubstr("attempt 1 of "));
  EXPECT_THAT(broker_.nack_reasons_[0], HasSubstr("fails on purpose"));
  EXPECT_TRUE(broker_.acked_.empty());
  worker_->OnDelivery(Delivery("evt_A", 2, 2));  // the broker redelivers after the delay
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.nacked_.size() == 2; }));
  EXPECT_NEAR(absl::ToDoubleSeconds(broker_.nacked_[1].second), 2.0, 0.001);
  worker_->OnDelivery(Delivery("evt_A", 2, 3));
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 1; }));
  EXPECT_THAT(Types(),
              ::testing::ElementsAre("job.enqueued", "job.started", "job.failed", "job.started",
                                     "job.failed", "job.started", "job.completed"));
  auto job = worker_->GetJob([] {
    v1::GetJobRequest r;
    r.set_id(DeriveId("job", {"evt_A"}));
    return r;
  }());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->status(), v1::JOB_STATUS_COMPLETED);
  EXPECT_EQ(job->attempt(), 3u);
  absl::MutexLock lock(&broker_.mu_);
  // The design's WorkerStatusWebhook: status is a string naming the step
  // (it used to be the boolean `true`), processingTime a number of ms.
  for (const auto& ev : broker_.published_) {
    // Ids stay of fixed length after retries (issue 14).
    EXPECT_EQ(ev.id().size(), 4u + 26u) << ev.id();
    const auto& f = ev.data().fields();
    ASSERT_TRUE(f.count("status")) << ev.type();
    EXPECT_EQ(f.at("status").kind_case(), google::protobuf::Value::kStringValue) << ev.type();
    EXPECT_EQ("job." + f.at("status").string_value(), ev.type());
    EXPECT_EQ(f.at("processingTime").kind_case(), google::protobuf::Value::kNumberValue);
    for (const char* k : {"workerId", "queueName", "jobId", "jobType"}) {
      EXPECT_EQ(f.at(k).kind_case(), google::protobuf::Value::kStringValue) << k;
    }
  }
  const auto& failed = broker_.published_[2];
  EXPECT_EQ(failed.data().fields().at("attempt").number_value(), 1);
  EXPECT_TRUE(failed.data().fields().count("nextRetryAt"));
  EXPECT_FALSE(failed.data().fields().at("final").bool_value());
  EXPECT_EQ(failed.correlation_id(), "corr-9");
}

TEST_F(WorkerTest, AlwaysFailingJobFailsFinallyAndIsAcked) {
  for (int a = 1; a <= 3; ++a) {
    worker_->OnDelivery(Delivery("evt_B", -1, a));
    if (a < 3) {
      ASSERT_TRUE(broker_.WaitFor(
          [a](FakeBrokerClient& b) { return b.nacked_.size() == static_cast<size_t>(a); }));
    }
  }
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 1; }));
  auto list = worker_->ListJobs([] {
    v1::ListJobsRequest r;
    r.set_status(v1::JOB_STATUS_FAILED);
    return r;
  }());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->jobs_size(), 1);
  EXPECT_EQ(list->jobs(0).attempt(), 3u);
  EXPECT_THAT(list->jobs(0).error(), HasSubstr("fails on purpose"));
  absl::MutexLock lock(&broker_.mu_);
  EXPECT_TRUE(broker_.published_.back().data().fields().at("final").bool_value());
}

// The broker hands deliveries over a stream message at a time; each is
// handled as if it came alone: a job already done is acked without running,
// an event twice in one message runs once (acked with its newest ack id),
// and an event no mapping takes is acked.
TEST_F(WorkerTest, EveryDeliveryOfABatchIsHandledAsIfItCameAlone) {
  v1::Job done;
  done.set_id(DeriveId("job", {"evt_DONE"}));
  done.set_queue("test");
  done.set_status(v1::JOB_STATUS_COMPLETED);
  ASSERT_TRUE(store_->Put(done).ok());
  google::protobuf::RepeatedPtrField<broker::v1::Delivery> batch;
  *batch.Add() = Delivery("evt_N1", 0, 1);
  batch.Mutable(0)->set_ack_id("n1");
  *batch.Add() = Delivery("evt_DONE", 0, 1);
  batch.Mutable(1)->set_ack_id("done");
  *batch.Add() = Delivery("evt_N1", 0, 2);
  batch.Mutable(2)->set_ack_id("n1-again");
  *batch.Add() = Delivery("evt_X", 0, 1);
  batch.Mutable(3)->mutable_event()->set_type("other.type");
  batch.Mutable(3)->set_ack_id("other");
  worker_->OnDeliveries(batch);
  auto job_acked = [](FakeBrokerClient& b) {
    return std::count(b.acked_.begin(), b.acked_.end(), "n1-again") +
               std::count(b.acked_.begin(), b.acked_.end(), "n1") >
           0;
  };
  ASSERT_TRUE(broker_.WaitFor(job_acked));
  ASSERT_TRUE(worker_->Shutdown());  // nothing more can be acked
  {
    absl::MutexLock lock(&broker_.mu_);
    EXPECT_THAT(broker_.acked_, ::testing::UnorderedElementsAre("done", "other", "n1-again"));
  }
  std::vector<std::string> types = Types();
  EXPECT_EQ(std::count(types.begin(), types.end(), "job.started"), 1) << "evt_N1 ran once";
  EXPECT_EQ(std::count(types.begin(), types.end(), "job.completed"), 1);
  auto n1 = store_->Get(DeriveId("job", {"evt_N1"}));
  ASSERT_TRUE(n1.ok() && n1->has_value());
  EXPECT_EQ((*n1)->status(), v1::JOB_STATUS_COMPLETED);
  EXPECT_EQ((*n1)->attempt(), 1u);
}

// A record that cannot be read fails the read of the whole message: the
// worker reads each alone then, so only those jobs are nacked (in one call)
// and the others run. A store that is down fails them all. Either way the
// jobs are let go: redelivered once the store reads, they run.
TEST_F(WorkerTest, AnUnreadableRecordHoldsBackOnlyItsOwnJob) {
  class FaultyStore : public testing::MemoryJobStore {
   public:
    absl::StatusOr<std::vector<std::optional<v1::Job>>> GetMany(
        const std::vector<std::string>& ids) override {
      if (down) return absl::UnavailableError("store down");
      return JobStore::GetMany(ids);  // Get for each: fails on a bad one
    }
    absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) override {
      if (bad.count(id) > 0) return absl::DataLossError("unreadable record");
      return MemoryJobStore::Get(id);
    }
    std::set<std::string> bad;
    bool down = false;
  } store;
  store.bad = {DeriveId("job", {"evt_BAD1"}), DeriveId("job", {"evt_BAD2"})};
  worker_.reset();
  auto parsed = ParseWorkerConfig(R"({"mappings":[{"eventType":"test.flaky","jobType":"flaky",
      "queue":"test"}],"queues":[{"name":"test"}]})",
                                  "w.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto config = ResolveWorkerConfig(*parsed, handlers_.Types());
  ASSERT_TRUE(config.ok()) << config.status();
  WorkerOptions options;
  options.worker_id = "w1";
  Worker worker(options, *config, &handlers_, &store, &broker_, &clock_, &metrics_);
  ASSERT_TRUE(worker.Start().ok());
  auto deliver = [&](std::vector<std::string> ids, const std::string& ack_suffix) {
    google::protobuf::RepeatedPtrField<broker::v1::Delivery> batch;
    for (const std::string& id : ids) {
      *batch.Add() = Delivery(id, 0, 1);
      batch.Mutable(batch.size() - 1)->set_ack_id(id + ack_suffix);
    }
    worker.OnDeliveries(batch);
  };
  deliver({"evt_OK1", "evt_BAD1", "evt_OK2", "evt_BAD2"}, "");
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 2; }));
  {
    absl::MutexLock lock(&broker_.mu_);
    EXPECT_THAT(broker_.acked_, ::testing::UnorderedElementsAre("evt_OK1", "evt_OK2"));
    EXPECT_THAT(broker_.nacked_,
                ::testing::UnorderedElementsAre(::testing::Pair("evt_BAD1", absl::Seconds(1)),
                                                ::testing::Pair("evt_BAD2", absl::Seconds(1))));
    ASSERT_EQ(broker_.nack_reasons_.size(), 1u) << "one call for both";
    EXPECT_THAT(broker_.nack_reasons_[0], HasSubstr("job store read failed"));
  }
  store.down = true;
  deliver({"evt_OK3", "evt_BAD1"}, "-2");
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.nacked_.size() == 4; }));
  store.down = false;
  store.bad.clear();
  deliver({"evt_BAD1", "evt_BAD2", "evt_OK3"}, "-3");
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 5; }));
  ASSERT_TRUE(worker.Shutdown());
  absl::MutexLock lock(&broker_.mu_);
  EXPECT_THAT(broker_.acked_, ::testing::UnorderedElementsAre("evt_OK1", "evt_OK2", "evt_BAD1-3",
                                                              "evt_BAD2-3", "evt_OK3-3"));
  EXPECT_EQ(broker_.nack_reasons_.size(), 2u);
}

// Jobs that finish together are published together; a job whose events the
// broker refuses is nacked alone, and its batchmates are recorded and acked.
TEST_F(WorkerTest, ARefusedJobDoesNotFailTheJobsFinishedWithIt) {
  {
    absl::MutexLock lock(&broker_.mu_);
    broker_.refused_subject_ = "bad";
    broker_.blocked_ = true;  // the jobs pile up behind the first publish
  }
  std::vector<broker::v1::Delivery> ds;
  for (const char* id : {"evt_G1", "evt_G2", "evt_BAD", "evt_G3"}) {
    ds.push_back(Delivery(id, 0, 1));
    ds.back().set_ack_id(id);
    ds.back().mutable_event()->set_subject(absl::string_view(id) == "evt_BAD" ? "bad" : "good");
  }
  for (const auto& d : ds) worker_->OnDelivery(d);
  auto finished = [&] {
    for (const auto& d : ds) {
      v1::GetJobRequest r;
      r.set_id(DeriveId("job", {d.event().id()}));
      auto job = worker_->GetJob(r);
      if (!job.ok() || job->status() != v1::JOB_STATUS_COMPLETED) return false;
    }
    return true;
  };
  bool ran = switchboard::testing::WaitUntil(finished, absl::Seconds(10));
  {
    absl::MutexLock lock(&broker_.mu_);
    broker_.blocked_ = false;
  }
  ASSERT_TRUE(ran) << "every job ran while nothing could be published";
  ASSERT_TRUE(broker_.WaitFor(
      [](FakeBrokerClient& b) { return b.acked_.size() == 3 && b.nacked_.size() == 1; }));
  EXPECT_THAT(broker_.acked_, ::testing::UnorderedElementsAre("evt_G1", "evt_G2", "evt_G3"));
  EXPECT_EQ(broker_.nacked_[0].first, "evt_BAD");
  EXPECT_THAT(broker_.nack_reasons_[0], HasSubstr("publishing the job's events failed"));
  for (const char* id : {"evt_G1", "evt_G2", "evt_G3"}) {
    auto stored = store_->Get(DeriveId("job", {id}));
    ASSERT_TRUE(stored.ok() && stored->has_value()) << id;
    EXPECT_EQ((*stored)->status(), v1::JOB_STATUS_COMPLETED) << id;
  }
  auto bad = store_->Get(DeriveId("job", {"evt_BAD"}));
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE(bad->has_value()) << "a job whose events are not out is not recorded as done";
}

// A job.failed the broker refuses for good (INVALID_ARGUMENT) must not make
// the attempt run again and again: the failure is recorded without it.
TEST_F(WorkerTest, ARefusedJobFailedStillRecordsTheAttempt) {
  {
    absl::MutexLock lock(&broker_.mu_);
    broker_.refused_subject_ = "bad";
  }
  broker::v1::Delivery d = Delivery("evt_R", -1, 1);
  d.mutable_event()->set_subject("bad");
  worker_->OnDelivery(d);
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.nacked_.size() == 1; }));
  EXPECT_THAT(broker_.nack_reasons_[0], HasSubstr("fails on purpose"))
      << "nacked for the handler's error, with the retry's backoff";
  auto stored = store_->Get(DeriveId("job", {"evt_R"}));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->status(), v1::JOB_STATUS_RETRY_SCHEDULED);
  EXPECT_EQ((*stored)->attempt(), 1u);
}

TEST_F(WorkerTest, RedeliveryOfACompletedJobIsAckedWithoutRunning) {
  worker_->OnDelivery(Delivery("evt_C", 0, 1));
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 1; }));
  size_t published = Types().size();
  worker_->OnDelivery(Delivery("evt_C", 0, 2));
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 2; }));
  EXPECT_EQ(Types().size(), published) << "the job ran twice";
}

// The broker's event ids are ULIDs: the job's id starts with the event's
// time, so jobs.db's id index takes appends (a hashed id put each insert on
// a random page), and a redelivery still finds the job.
TEST_F(WorkerTest, AJobOfABrokerEventIsKeyedInTheEventsTimeOrder) {
  const std::string earlier = "evt_01JD0000007Z9X1Q2W3E4R5T6Y";
  const std::string later = "evt_01JD0000017Z9X1Q2W3E4R5T6Y";
  worker_->OnDelivery(Delivery(later, 0, 1));
  worker_->OnDelivery(Delivery(earlier, 0, 1));
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 2; }));
  std::string first, second;
  for (const auto& [event_id, job_id] : {std::pair{earlier, &first}, std::pair{later, &second}}) {
    v1::GetJobRequest r;
    r.set_id(DeriveOrderedId("job", event_id));
    auto job = worker_->GetJob(r);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->id().substr(4, 10), event_id.substr(4, 10));
    *job_id = job->id();
  }
  EXPECT_LT(first, second);
  size_t published = Types().size();
  worker_->OnDelivery(Delivery(later, 0, 2));
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 3; }));
  EXPECT_EQ(Types().size(), published) << "the redelivered event ran its job again";
}

TEST_F(WorkerTest, JobPastItsTimeoutFailsWithTimeout) {
  worker_.reset();
  store_.reset();
  std::filesystem::remove_all(dir_);
  Build(R"({"mappings":[{"eventType":"test.sleep","jobType":"sleep","queue":"slow"}],
            "queues":[{"name":"slow","attempts":1,"timeout":"0.05s"}]})",
        RealClock::Get());  // the handler sleeps in real time
  broker::v1::Delivery d;
  d.mutable_event()->set_id("evt_S");
  d.mutable_event()->set_type("test.sleep");
  (*d.mutable_event()->mutable_data()->mutable_fields())["sleepMs"].set_number_value(5000);
  d.set_ack_id("9-1");
  absl::Time start = absl::Now();
  worker_->OnDelivery(d);
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 1; }));
  EXPECT_LT(absl::Now() - start, absl::Seconds(4)) << "the handler was stopped at its deadline";
  auto job = worker_->GetJob([] {
    v1::GetJobRequest r;
    r.set_id(DeriveId("job", {"evt_S"}));
    return r;
  }());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->status(), v1::JOB_STATUS_FAILED);
  EXPECT_THAT(job->error(), HasSubstr("timed out"));
}

// A job's status and its timing fields as one snapshot: what a reader may see.
std::string Inconsistency(const v1::Job& j) {
  if (j.id().empty() || j.attempt() < 1) return "no id or attempt";
  if (!j.has_enqueued_at()) return "no enqueued_at";
  switch (j.status()) {
    case v1::JOB_STATUS_WAITING:
      return "";
    case v1::JOB_STATUS_ACTIVE:
      if (!j.has_started_at()) return "active without started_at";
      if (j.has_finished_at()) return "active with finished_at";
      return "";
    case v1::JOB_STATUS_COMPLETED:
    case v1::JOB_STATUS_FAILED:
    case v1::JOB_STATUS_RETRY_SCHEDULED:
      if (!j.has_started_at() || !j.has_finished_at()) return "finished without its times";
      if (j.finished_at().seconds() < j.started_at().seconds()) return "finished before started";
      if (j.status() == v1::JOB_STATUS_RETRY_SCHEDULED && !j.has_next_retry_at()) {
        return "retry without next_retry_at";
      }
      if (j.status() == v1::JOB_STATUS_FAILED && j.error().empty()) return "failed without error";
      if (j.status() == v1::JOB_STATUS_COMPLETED && !j.error().empty()) {
        return "completed with an error";
      }
      return "";
    default:
      return "unknown status";
  }
}

// GetJob/ListJobs/GetStats from other threads while many jobs run, fail,
// retry and complete: every job they return is one consistent snapshot (the
// worker threads update a job while readers copy it). Under ThreadSanitizer
// an unsynchronised update of a job readers can see is reported.
TEST_F(WorkerTest, JobsReadWhileRunningAreConsistent) {
  Rebuild(R"({"mappings":[{"eventType":"test.sleep","jobType":"sleep","queue":"slow"},
                          {"eventType":"test.flaky","jobType":"flaky","queue":"test"}],
              "queues":[{"name":"slow","concurrency":4},
                        {"name":"test","concurrency":4,"attempts":2,
                         "backoff":{"initial":"0.01s","max":"0.01s"}}]})",
          RealClock::Get());  // the sleep handler sleeps in real time
  constexpr int kSleeps = 120, kFlaky = 80;
  auto event = [](const std::string& id, const std::string& type, const std::string& key,
                  double value, int attempt) {
    broker::v1::Delivery d;
    d.mutable_event()->set_id(id);
    d.mutable_event()->set_type(type);
    d.mutable_event()->set_correlation_id("reads");
    (*d.mutable_event()->mutable_data()->mutable_fields())[key].set_number_value(value);
    d.set_ack_id(absl::StrCat(id, "-", attempt));
    d.set_delivery_attempt(attempt);
    return d;
  };
  // Ids of the jobs delivered so far; readers only ask for those.
  std::vector<std::string> ids;
  for (int i = 0; i < kSleeps; ++i) ids.push_back(DeriveId("job", {absl::StrCat("evt_S", i)}));
  for (int i = 0; i < kFlaky; ++i) ids.push_back(DeriveId("job", {absl::StrCat("evt_F", i)}));
  std::atomic<int> delivered{0};
  std::atomic<bool> done{false};
  absl::Mutex bad_mu;
  std::vector<std::string> bad;
  auto report = [&](const std::string& what) {
    absl::MutexLock lock(&bad_mu);
    if (bad.size() < 5) bad.push_back(what);
  };
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      uint64_t last_done = 0;
      size_t i = r;
      while (!done.load()) {
        int n = delivered.load();
        if (n > 0) {
          v1::GetJobRequest get;
          get.set_id(ids[i++ % n]);
          absl::StatusOr<v1::Job> job = worker_->GetJob(get);
          if (!job.ok()) {
            report(absl::StrCat(get.id(), ": ", job.status().ToString()));
          } else if (std::string why = Inconsistency(*job); !why.empty()) {
            report(absl::StrCat(get.id(), ": ", why, ": ", job->ShortDebugString()));
          }
        }
        if (r == 0) {
          v1::ListJobsRequest list;
          list.set_limit(1000);
          absl::StatusOr<v1::ListJobsResponse> resp = worker_->ListJobs(list);
          if (!resp.ok()) {
            report(resp.status().ToString());
          } else {
            for (const v1::Job& j : resp->jobs()) {
              if (std::string why = Inconsistency(j); !why.empty()) {
                report(absl::StrCat("list: ", j.id(), ": ", why, ": ", j.ShortDebugString()));
              }
            }
          }
        }
        if (r == 1) {
          uint64_t finished = 0;
          v1::GetStatsResponse stats = worker_->GetStats();
          for (const v1::QueueStats& q : stats.queues()) {
            if (q.active() > q.concurrency()) report(absl::StrCat(q.name(), ": over concurrency"));
            finished += q.completed() + q.failed() + q.retried();
          }
          if (finished < last_done) report("stats went backwards");
          last_done = finished;
        }
        reads.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < kSleeps + kFlaky; ++i) {
    worker_->OnDelivery(
        i < kSleeps ? event(absl::StrCat("evt_S", i), "test.sleep", "sleepMs", i % 3, 1)
                    : event(absl::StrCat("evt_F", i - kSleeps), "test.flaky", "failTimes", 1, 1));
    delivered.store(i + 1);
  }
  // Every flaky job fails once: redeliver it as the broker would.
  ASSERT_TRUE(broker_.WaitFor(
      [&](FakeBrokerClient& b) { return b.nacked_.size() == static_cast<size_t>(kFlaky); },
      absl::Seconds(60)));
  for (int i = 0; i < kFlaky; ++i) {
    worker_->OnDelivery(event(absl::StrCat("evt_F", i), "test.flaky", "failTimes", 1, 2));
  }
  bool all_acked = broker_.WaitFor(
      [&](FakeBrokerClient& b) { return b.acked_.size() == static_cast<size_t>(kSleeps + kFlaky); },
      absl::Seconds(60));
  done.store(true);
  for (std::thread& t : readers) t.join();
  ASSERT_TRUE(all_acked);
  EXPECT_GT(reads.load(), 0u);
  absl::MutexLock lock(&bad_mu);
  EXPECT_THAT(bad, ::testing::IsEmpty());
  for (const std::string& id : ids) {
    v1::GetJobRequest get;
    get.set_id(id);
    absl::StatusOr<v1::Job> job = worker_->GetJob(get);
    ASSERT_TRUE(job.ok()) << id;
    EXPECT_EQ(job->status(), v1::JOB_STATUS_COMPLETED) << job->ShortDebugString();
    EXPECT_EQ(Inconsistency(*job), "") << job->ShortDebugString();
  }
}

TEST_F(WorkerTest, PausedQueueHoldsJobsUntilResumed) {
  ASSERT_TRUE(worker_->SetPaused("test", true).ok());
  worker_->OnDelivery(Delivery("evt_D", 0, 1));
  auto stats = worker_->GetStats();
  ASSERT_EQ(stats.queues_size(), 5);
  bool found = false;
  for (auto& q : stats.queues()) {
    if (q.name() == "test") {
      found = true;
      EXPECT_EQ(q.waiting(), 1u);
      EXPECT_TRUE(q.paused());
    }
  }
  EXPECT_TRUE(found);
  EXPECT_TRUE(broker_.acked_.empty());
  ASSERT_TRUE(worker_->SetPaused("test", false).ok());
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 1; }));
  EXPECT_EQ(worker_->SetPaused("nope", true).status().code(), absl::StatusCode::kNotFound);
}

// Priorities (issue 14): a burst of low-priority cart e-mails does not delay
// a payment job queued after them in the same queue, and an event can raise
// its own job with metadata.priority.
TEST_F(WorkerTest, HigherPriorityJobsStartFirstFifoWithinAPriority) {
  Rebuild(R"({"mappings":[
      {"eventType":"cart.abandoned","jobType":"noop","queue":"shared"},
      {"eventType":"test.pay","jobType":"noop","queue":"shared","priority":10}],
    "queues":[{"name":"shared","concurrency":1}]})");
  ASSERT_TRUE(worker_->SetPaused("shared", true).ok());
  auto delivery = [](const std::string& id, const std::string& type, const std::string& priority) {
    broker::v1::Delivery d;
    d.mutable_event()->set_id(id);
    d.mutable_event()->set_type(type);
    if (!priority.empty()) (*d.mutable_event()->mutable_metadata())["priority"] = priority;
    d.set_ack_id(id + "-1");
    d.set_delivery_attempt(1);
    return d;
  };
  for (int i = 0; i < 20; ++i)
    worker_->OnDelivery(delivery(absl::StrCat("evt_cart", i), "cart.abandoned", ""));
  worker_->OnDelivery(delivery("evt_pay", "test.pay", ""));
  worker_->OnDelivery(delivery("evt_urgent_cart", "cart.abandoned", "20"));
  ASSERT_TRUE(worker_->SetPaused("shared", false).ok());
  ASSERT_TRUE(broker_.WaitFor([](FakeBrokerClient& b) { return b.acked_.size() == 22; }));
  std::vector<std::string> started;
  {
    absl::MutexLock lock(&broker_.mu_);
    for (const auto& e : broker_.published_) {
      if (e.type() == "job.started")
        started.push_back(e.data().fields().at("jobId").string_value());
    }
  }
  ASSERT_EQ(started.size(), 22u);
  EXPECT_EQ(started[0], DeriveId("job", {"evt_urgent_cart"})) << "raised by its metadata";
  EXPECT_EQ(started[1], DeriveId("job", {"evt_pay"})) << "the payment did not wait for 20 e-mails";
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(started[2 + i], DeriveId("job", {absl::StrCat("evt_cart", i)})) << "FIFO at " << i;
  }
}

// Two workers over one shared store (the in-memory fake standing for
// Redis): a pause made through one holds the other's jobs within a sync, and
// its resume releases them; stats count the deployment's jobs.
TEST(SharedStoreWorkerTest, APauseThroughOneWorkerHoldsTheOthersJobsUntilResumed) {
  HandlerRegistry handlers;
  RegisterBuiltinHandlers(&handlers);
  auto parsed = ParseWorkerConfig(
      R"({"mappings":[{"eventType":"test.noop","jobType":"noop","queue":"test"}]})", "w.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto config = ResolveWorkerConfig(*parsed, handlers.Types());
  ASSERT_TRUE(config.ok());
  auto backing = std::make_shared<testing::MemoryJobStore::Backing>();
  testing::MemoryJobStore store_a(true, absl::Hours(1), backing),
      store_b(true, absl::Hours(1), backing);
  FakeBrokerClient broker_a, broker_b;
  FakeClock clock;
  prometheus::Registry registry;
  WorkerMetrics metrics{registry};
  WorkerOptions options;
  options.sync_every = absl::Milliseconds(20);
  options.worker_id = "a";
  Worker a(options, *config, &handlers, &store_a, &broker_a, &clock, &metrics);
  options.worker_id = "b";
  Worker b(options, *config, &handlers, &store_b, &broker_b, &clock, &metrics);
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(b.Start().ok());
  auto paused_at_b = [&] {
    const auto stats = b.GetStats();
    for (const auto& q : stats.queues()) {
      if (q.name() == "test") return q.paused();
    }
    return false;
  };
  ASSERT_TRUE(a.SetPaused("test", true).ok());
  ASSERT_TRUE(switchboard::testing::WaitUntil(paused_at_b, absl::Seconds(5)));

  broker::v1::Delivery d;
  d.mutable_event()->set_id("evt_shared");
  d.mutable_event()->set_type("test.noop");
  d.set_ack_id("1-1");
  b.OnDelivery(d);
  auto started = [](FakeBrokerClient& br) {
    for (const auto& e : br.published_) {
      if (e.type() == "job.started") return true;
    }
    return false;
  };
  // Held: a sync later it has still not started (waiting, counted by both).
  ASSERT_TRUE(switchboard::testing::WaitUntil(
      [&] {
        const auto stats = a.GetStats();
        for (const auto& q : stats.queues()) {
          if (q.name() == "test") return q.waiting() == 1;
        }
        return false;
      },
      absl::Seconds(5)));
  EXPECT_FALSE(broker_b.WaitFor(started, absl::Milliseconds(100)));

  ASSERT_TRUE(a.SetPaused("test", false).ok());
  ASSERT_TRUE(broker_b.WaitFor([](FakeBrokerClient& br) { return !br.acked_.empty(); }));
  EXPECT_TRUE(broker_b.WaitFor(started, absl::Seconds(1)));
  ASSERT_TRUE(switchboard::testing::WaitUntil(
      [&] {
        const auto stats = a.GetStats();
        for (const auto& q : stats.queues()) {
          if (q.name() == "test") return q.completed() == 1 && !q.paused();
        }
        return false;
      },
      absl::Seconds(5)))
      << "worker a counts the job worker b completed";
  a.Shutdown();
  b.Shutdown();
}

}  // namespace
}  // namespace switchboard::jobs
