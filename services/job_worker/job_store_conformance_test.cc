// The JobStore contract, held by every implementation: SQLite (one worker),
// Redis and a Redis Cluster (shared by workers), and the in-memory fake.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/job_worker/redis_job_store.h"
#include "services/job_worker/sqlite_job_store.h"
#include "services/job_worker/testing/memory_job_store.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/store_backends.h"

namespace switchboard::jobs {
namespace {

using switchboard::testing::Backend;
using switchboard::testing::BackendName;

class JobStoreConformance : public switchboard::testing::StoreConformanceTest {
 protected:
  // A store over this test's data; another call is the same data as another
  // worker (shared stores) or a restarted one (SQLite) sees it.
  std::shared_ptr<JobStore> Open(absl::Duration retention = absl::Hours(24 * 7)) {
    switch (GetParam()) {
      case Backend::kMemory:
        // A new store over the same data: another worker's view.
        if (memory_ == nullptr) memory_ = std::make_shared<testing::MemoryJobStore::Backing>();
        return std::make_shared<testing::MemoryJobStore>(true, retention, memory_);
      case Backend::kSqlite: {
        auto s = SqliteJobStore::Open(dir_, retention);
        EXPECT_TRUE(s.ok()) << s.status();
        return s.ok() ? std::shared_ptr<JobStore>(*std::move(s)) : nullptr;
      }
      case Backend::kRedis:
      case Backend::kRedisCluster: {
        RedisJobStoreOptions opts;
        opts.prefix = prefix_;
        opts.retention = retention;
        return std::make_shared<RedisJobStore>(
            redis::NewRedisClient(RedisConfigOf(), redis_metrics()), opts);
      }
    }
    return nullptr;
  }

  static v1::Job MakeJob(const std::string& id, const std::string& queue, v1::JobStatus status,
                         const std::string& corr = "") {
    v1::Job j;
    j.set_id(id);
    j.set_queue(queue);
    j.set_status(status);
    j.set_type("payment-processing");
    j.set_correlation_id(corr);
    j.set_attempt(1);
    return j;
  }

  static std::vector<std::string> Ids(const std::vector<v1::Job>& jobs) {
    std::vector<std::string> out;
    for (const v1::Job& j : jobs) out.push_back(j.id());
    return out;
  }

  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::shared_ptr<testing::MemoryJobStore::Backing> memory_;
};

TEST_P(JobStoreConformance, RecordsAreReadListedAndCountedByTheirLatestStatus) {
  auto store = Open();
  ASSERT_TRUE(store->Put(MakeJob("j1", "payments", v1::JOB_STATUS_WAITING, "ord-1")).ok());
  ASSERT_TRUE(store->Put(MakeJob("j2", "payments", v1::JOB_STATUS_ACTIVE, "ord-2")).ok());
  ASSERT_TRUE(store->Put(MakeJob("j3", "inventory", v1::JOB_STATUS_WAITING, "ord-1")).ok());
  v1::Job done = MakeJob("j1", "payments", v1::JOB_STATUS_COMPLETED, "ord-1");
  done.set_attempt(2);
  done.set_error("");
  ASSERT_TRUE(store->Put(done).ok());

  auto got = store->Get("j1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ((*got)->status(), v1::JOB_STATUS_COMPLETED);
  EXPECT_EQ((*got)->attempt(), 2u);
  auto missing = store->Get("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  auto all = store->List({});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(Ids(*all), (std::vector<std::string>{"j1", "j3", "j2"}));  // newest update first
  JobQuery q;
  q.queue = "payments";
  EXPECT_EQ(Ids(*store->List(q)), (std::vector<std::string>{"j1", "j2"}));
  q = {};
  q.status = v1::JOB_STATUS_WAITING;
  EXPECT_EQ(Ids(*store->List(q)), (std::vector<std::string>{"j3"}));
  q = {};
  q.correlation_id = "ord-1";
  EXPECT_EQ(Ids(*store->List(q)), (std::vector<std::string>{"j1", "j3"}));
  q.queue = "inventory";
  EXPECT_EQ(Ids(*store->List(q)), (std::vector<std::string>{"j3"}));
  q = {};
  q.limit = 2;
  EXPECT_EQ(store->List(q)->size(), 2u);

  auto counts = store->CountByQueueAndStatus();
  ASSERT_TRUE(counts.ok()) << counts.status();
  std::map<std::pair<std::string, int>, uint64_t> want = {
      {{"payments", v1::JOB_STATUS_COMPLETED}, 1},
      {{"payments", v1::JOB_STATUS_ACTIVE}, 1},
      {{"inventory", v1::JOB_STATUS_WAITING}, 1}};
  EXPECT_EQ(*counts, want);
}

TEST_P(JobStoreConformance, RetriesAreCountedPerQueue) {
  auto store = Open();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store->Put(MakeJob("r1", "payments", v1::JOB_STATUS_RETRY_SCHEDULED)).ok());
  }
  ASSERT_TRUE(store->Put(MakeJob("r1", "payments", v1::JOB_STATUS_COMPLETED)).ok());
  auto retried = store->RetriedByQueue();
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(*retried, (std::map<std::string, uint64_t>{{"payments", 3}}));
}

TEST_P(JobStoreConformance, PutManyRecordsEveryJobAndLaterOnesWin) {
  auto store = Open();
  ASSERT_TRUE(store->Put(MakeJob("m1", "payments", v1::JOB_STATUS_ACTIVE, "ord-1")).ok());
  ASSERT_TRUE(store->PutMany({}).ok());
  // m1 replaced; m2 twice in one call (the later one wins); m3 new.
  ASSERT_TRUE(store
                  ->PutMany({MakeJob("m1", "payments", v1::JOB_STATUS_COMPLETED, "ord-1"),
                             MakeJob("m2", "payments", v1::JOB_STATUS_RETRY_SCHEDULED),
                             MakeJob("m3", "inventory", v1::JOB_STATUS_FAILED, "ord-1"),
                             MakeJob("m2", "payments", v1::JOB_STATUS_COMPLETED)})
                  .ok());
  for (auto [id, status] :
       std::vector<std::pair<std::string, v1::JobStatus>>{{"m1", v1::JOB_STATUS_COMPLETED},
                                                          {"m2", v1::JOB_STATUS_COMPLETED},
                                                          {"m3", v1::JOB_STATUS_FAILED}}) {
    auto got = store->Get(id);
    ASSERT_TRUE(got.ok() && got->has_value()) << id << " " << got.status();
    EXPECT_EQ((*got)->status(), status) << id;
  }
  auto counts = store->CountByQueueAndStatus();
  ASSERT_TRUE(counts.ok()) << counts.status();
  std::map<std::pair<std::string, int>, uint64_t> want = {
      {{"payments", v1::JOB_STATUS_COMPLETED}, 2}, {{"inventory", v1::JOB_STATUS_FAILED}, 1}};
  EXPECT_EQ(*counts, want);
  EXPECT_EQ(*store->RetriedByQueue(), (std::map<std::string, uint64_t>{{"payments", 1}}));
  // One call's jobs share their update time: their order among themselves
  // is not part of the contract.
  JobQuery q;
  q.correlation_id = "ord-1";
  std::vector<std::string> ids = Ids(*store->List(q));
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"m1", "m3"}));
}

// The worker reads the records of a whole stream message at once.
TEST_P(JobStoreConformance, GetManyAnswersEachIdInOrder) {
  auto store = Open();
  ASSERT_TRUE(store
                  ->PutMany({MakeJob("g1", "payments", v1::JOB_STATUS_COMPLETED),
                             MakeJob("g3", "inventory", v1::JOB_STATUS_RETRY_SCHEDULED)})
                  .ok());
  auto got = store->GetMany({"g3", "missing", "g1", "g3"});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 4u);
  ASSERT_TRUE((*got)[0].has_value());
  EXPECT_EQ((*got)[0]->id(), "g3");
  EXPECT_EQ((*got)[0]->status(), v1::JOB_STATUS_RETRY_SCHEDULED);
  EXPECT_FALSE((*got)[1].has_value());
  ASSERT_TRUE((*got)[2].has_value());
  EXPECT_EQ((*got)[2]->status(), v1::JOB_STATUS_COMPLETED);
  ASSERT_TRUE((*got)[3].has_value());
  EXPECT_EQ((*got)[3]->id(), "g3");
  auto none = store->GetMany({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  // A read ends with it (SQLite: its read transaction): the next one sees
  // what was written since.
  ASSERT_TRUE(store->Put(MakeJob("g2", "payments", v1::JOB_STATUS_ACTIVE)).ok());
  auto after = store->GetMany({"g2", "g1"});
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_TRUE((*after)[0].has_value());
  EXPECT_EQ((*after)[0]->status(), v1::JOB_STATUS_ACTIVE);
  ASSERT_TRUE(store->Put(MakeJob("g1", "payments", v1::JOB_STATUS_FAILED)).ok());
  auto again = store->Get("g1");
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->status(), v1::JOB_STATUS_FAILED);
}

TEST_P(JobStoreConformance, CountersAndPausedQueuesOutliveTheProcess) {
  {
    auto store = Open();
    EXPECT_EQ(*store->NextCounter("order"), 1u);
    EXPECT_EQ(*store->NextCounter("order"), 2u);
    EXPECT_EQ(*store->NextCounter("other"), 1u);
    ASSERT_TRUE(store->SetPaused("payments", true).ok());
    ASSERT_TRUE(store->SetPaused("inventory", true).ok());
    ASSERT_TRUE(store->SetPaused("inventory", false).ok());
  }
  auto again = Open();
  EXPECT_EQ(*again->NextCounter("order"), 3u);
  auto paused = again->PausedQueues();
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_EQ(*paused, (std::set<std::string>{"payments"}));
}

TEST_P(JobStoreConformance, GlobalSlotsCapHoldersAndFreeThemWhenLeasesEnd) {
  auto a = Open();
  auto b = a->shared() ? Open() : a;  // two workers (one, embedded)
  const absl::Time t0 = absl::FromUnixSeconds(2000000000);
  const absl::Duration lease = absl::Seconds(10);
  EXPECT_TRUE(*a->AcquireSlot("payments", "w1:j1", 2, t0, lease));
  EXPECT_TRUE(*b->AcquireSlot("payments", "w2:j2", 2, t0, lease));
  EXPECT_FALSE(*b->AcquireSlot("payments", "w2:j3", 2, t0, lease)) << "a third over the cap";
  EXPECT_TRUE(*a->AcquireSlot("payments", "w1:j1", 2, t0, lease)) << "a holder's own slot";
  EXPECT_TRUE(*a->AcquireSlot("inventory", "w1:j9", 1, t0, lease)) << "queues apart";
  EXPECT_EQ(*a->SlotsHeld("payments", t0), 2u);

  ASSERT_TRUE(b->ReleaseSlot("payments", "w2:j2").ok());
  EXPECT_TRUE(*b->AcquireSlot("payments", "w2:j3", 2, t0, lease));
  // w1 keeps renewing; w2 stops (died): its slot frees when its lease ends.
  ASSERT_TRUE(a->RenewSlots("payments", {"w1:j1"}, t0 + absl::Seconds(8), lease).ok());
  const absl::Time later = t0 + absl::Seconds(12);
  EXPECT_EQ(*a->SlotsHeld("payments", later), 1u);
  EXPECT_TRUE(*b->AcquireSlot("payments", "w2:j4", 2, later, lease));
  EXPECT_FALSE(*b->AcquireSlot("payments", "w2:j5", 2, later, lease));
  // An ended lease is not revived by a renewal.
  ASSERT_TRUE(b->RenewSlots("payments", {"w2:j3"}, later, lease).ok());
  EXPECT_EQ(*a->SlotsHeld("payments", later), 2u);
}

TEST_P(JobStoreConformance, LoadsOfOtherWorkersAreSummedUntilTheirReportsEnd) {
  auto a = Open(), b = Open(), c = Open();
  const absl::Time t0 = absl::FromUnixSeconds(2000000000);
  ASSERT_TRUE(a->ReportLoad("w1", {{"payments", {3, 2, 10, 100}}}, t0, absl::Seconds(5)).ok());
  ASSERT_TRUE(b->ReportLoad("w2", {{"payments", {1, 1, 5, 50}}, {"inventory", {0, 4, 0, 0}}}, t0,
                            absl::Seconds(2))
                  .ok());
  auto others = c->OtherLoads("w1", t0 + absl::Seconds(1));
  ASSERT_TRUE(others.ok()) << others.status();
  if (!c->shared()) {
    EXPECT_TRUE(others->empty()) << "one worker: no others";
    return;
  }
  EXPECT_EQ(others->size(), 2u);
  EXPECT_EQ((*others)["payments"].waiting, 1u);
  EXPECT_EQ((*others)["inventory"].active, 4u);
  auto all = c->OtherLoads("w3", t0 + absl::Seconds(1));
  EXPECT_EQ((*all)["payments"].waiting, 4u);
  EXPECT_EQ((*all)["payments"].active, 3u);
  EXPECT_EQ((*all)["payments"].processed, 15u);
  EXPECT_DOUBLE_EQ((*all)["payments"].processing_ms_total, 150);
  // w2's report ended at t0+2s.
  auto late = c->OtherLoads("w3", t0 + absl::Seconds(3));
  EXPECT_EQ((*late)["payments"].waiting, 3u);
  EXPECT_EQ(late->count("inventory"), 0u);
}

TEST_P(JobStoreConformance, RecordsPastTheRetentionAreDroppedWithTheirCounts) {
  auto store = Open(absl::Milliseconds(200));
  ASSERT_TRUE(store->Put(MakeJob("old", "payments", v1::JOB_STATUS_COMPLETED, "ord-9")).ok());
  absl::Time put = absl::Now();
  // Retention is about time passing: wait until the record is older than it.
  ASSERT_TRUE(switchboard::testing::WaitUntil(
      [&] { return absl::Now() > put + absl::Milliseconds(300); }, absl::Seconds(5)));
  ASSERT_TRUE(store->Put(MakeJob("new", "payments", v1::JOB_STATUS_COMPLETED, "ord-9")).ok());
  EXPECT_FALSE(store->Get("old")->has_value());
  EXPECT_TRUE(store->Get("new")->has_value());
  JobQuery q;
  q.correlation_id = "ord-9";
  EXPECT_EQ(Ids(*store->List(q)), (std::vector<std::string>{"new"}));
  auto counts = store->CountByQueueAndStatus();
  EXPECT_EQ(counts->at({"payments", v1::JOB_STATUS_COMPLETED}), 1u);
}

// Retention keeps up with big writes: every PutMany drops more expired
// records than it adds, so the store does not grow under steady load.
TEST_P(JobStoreConformance, RetentionKeepsUpWithBatchesOfJobs) {
  auto store = Open(absl::Milliseconds(200));
  auto batch = [](const std::string& prefix) {
    std::vector<v1::Job> jobs;
    for (int i = 0; i < 300; ++i) {
      jobs.push_back(MakeJob(absl::StrCat(prefix, i), "payments", v1::JOB_STATUS_COMPLETED));
    }
    return jobs;
  };
  ASSERT_TRUE(store->PutMany(batch("old-")).ok());
  absl::Time put = absl::Now();
  ASSERT_TRUE(switchboard::testing::WaitUntil(
      [&] { return absl::Now() > put + absl::Milliseconds(300); }, absl::Seconds(5)));
  ASSERT_TRUE(store->PutMany(batch("new-")).ok());
  auto counts = store->CountByQueueAndStatus();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->at({"payments", v1::JOB_STATUS_COMPLETED}), 300u)
      << "one write of 300 jobs dropped all 300 expired ones";
  EXPECT_FALSE(store->Get("old-299")->has_value());
}

TEST_P(JobStoreConformance, SharedStoresShowOneWorkersRecordsToAnother) {
  auto a = Open(), b = Open();
  if (!a->shared()) GTEST_SKIP() << "one worker per embedded store";
  ASSERT_TRUE(a->Put(MakeJob("x1", "payments", v1::JOB_STATUS_COMPLETED)).ok());
  auto got = b->Get("x1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status(), v1::JOB_STATUS_COMPLETED);
  ASSERT_TRUE(a->SetPaused("payments", true).ok());
  EXPECT_EQ(*b->PausedQueues(), (std::set<std::string>{"payments"}));
  EXPECT_EQ(*a->NextCounter("order"), 1u);
  EXPECT_EQ(*b->NextCounter("order"), 2u);
}

INSTANTIATE_TEST_SUITE_P(Stores, JobStoreConformance, switchboard::testing::kAllBackends,
                         BackendName);

}  // namespace
}  // namespace switchboard::jobs
