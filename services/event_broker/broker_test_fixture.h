#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_TEST_FIXTURE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_TEST_FIXTURE_H_

// The broker's unit-test fixture: a real SQLite store behind a FaultyStore
// (holds, refuses or fails commits on demand), a fake clock, and a sink that
// collects deliveries. Shared by broker_test.cc and broker_faults_test.cc.
#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "services/event_broker/broker.h"
#include "services/event_broker/forwarding_store.h"
#include "services/event_broker/sqlite_store.h"
#include "services/event_broker/test_util.h"

namespace switchboard::broker::test_support {

using google::protobuf::util::TimeUtil;

// A subscriber that takes deliveries as the broker offers them, unless
// paused (then it behaves like a client that stopped reading).
class CollectingSink : public SubscriptionSink {
 public:
  void Attach(std::shared_ptr<Subscription> sub) {
    {
      absl::MutexLock lock(&mu_);
      sub_ = std::move(sub);
    }
    Drain();
  }
  void OnReady() override { Drain(); }
  void OnEnd(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    ended_ = status;
    has_ended_ = true;
  }
  bool WaitForEnd(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&has_ended_), timeout);
  }
  void Drain() {
    absl::MutexLock lock(&mu_);
    if (sub_ == nullptr || paused_) return;
    while (std::optional<Outgoing> o = sub_->Next()) got_.push_back(*std::move(o));
  }
  void SetPaused(bool paused) {
    {
      absl::MutexLock lock(&mu_);
      paused_ = paused;
    }
    Drain();
  }
  // Waits (bounded) until at least n deliveries arrived; returns them all.
  std::vector<Outgoing> WaitFor(size_t n, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return got_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
    return got_;
  }
  size_t count() {
    absl::MutexLock lock(&mu_);
    return got_.size();
  }
  void Close() {
    std::shared_ptr<Subscription> sub;
    {
      absl::MutexLock lock(&mu_);
      sub = std::move(sub_);
    }
    if (sub) sub->Close();
  }
  ~CollectingSink() override { Close(); }

 private:
  absl::Mutex mu_;
  std::shared_ptr<Subscription> sub_ ABSL_GUARDED_BY(mu_);
  std::vector<Outgoing> got_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status ended_ ABSL_GUARDED_BY(mu_);
  bool has_ended_ ABSL_GUARDED_BY(mu_) = false;
};

// The real SQLite store behind a switch board of faults: commits can be held
// at a gate, and commits that touch one group op's sequence can be refused.
class FaultyStore : public ForwardingEventStore {
 public:
  explicit FaultyStore(std::unique_ptr<EventStore> inner)
      : ForwardingEventStore(std::move(inner)) {}

  void SetGate(bool open) {
    absl::MutexLock lock(&mu_);
    gate_open_ = open;
  }
  // Waits (bounded) until a commit is held at the closed gate.
  bool WaitForHeldCommit(absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto held = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&held), timeout);
  }
  void RefuseOpsFor(uint64_t seq) {
    absl::MutexLock lock(&mu_);
    refuse_seq_ = seq;
  }
  // Refuses the next `times` commits holding an op of `kind` for `seq`.
  void RefuseKind(GroupOp::Kind kind, uint64_t seq, int times) {
    absl::MutexLock lock(&mu_);
    refuse_kind_ = kind;
    refuse_kind_seq_ = seq;
    refuse_kind_times_ = times;
  }
  // Every commit fails (the store is down).
  void SetDown(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  int failed_commits() {
    absl::MutexLock lock(&mu_);
    return failed_commits_;
  }
  std::vector<uint64_t> retention_calls() {
    absl::MutexLock lock(&mu_);
    return retention_calls_;
  }

  absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) override {
    {
      absl::MutexLock lock(&mu_);
      ++held_;
      mu_.Await(absl::Condition(&gate_open_));
      --held_;
      if (down_) {
        ++failed_commits_;
        return absl::UnavailableError("store down on purpose");
      }
      for (const GroupOp& op : batch.ops) {
        if (refuse_seq_ != 0 && op.seq == refuse_seq_) {
          ++failed_commits_;
          return absl::InternalError("refused on purpose");
        }
        if (refuse_kind_times_ > 0 && op.kind == refuse_kind_ && op.seq == refuse_kind_seq_) {
          --refuse_kind_times_;
          ++failed_commits_;
          return absl::InternalError("refused on purpose");
        }
      }
    }
    return ForwardingEventStore::Commit(batch, now);
  }
  absl::StatusOr<uint64_t> ApplyRetention(absl::Time now, absl::Duration max_age,
                                          uint64_t max_count, uint64_t max_delete) override {
    {
      absl::MutexLock lock(&mu_);
      retention_calls_.push_back(max_delete);
    }
    return ForwardingEventStore::ApplyRetention(now, max_age, max_count, max_delete);
  }

 private:
  absl::Mutex mu_;
  bool gate_open_ ABSL_GUARDED_BY(mu_) = true;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refuse_seq_ ABSL_GUARDED_BY(mu_) = 0;
  GroupOp::Kind refuse_kind_ ABSL_GUARDED_BY(mu_) = GroupOp::Kind::kSetPending;
  uint64_t refuse_kind_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int refuse_kind_times_ ABSL_GUARDED_BY(mu_) = 0;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  int failed_commits_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> retention_calls_ ABSL_GUARDED_BY(mu_);
};

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    broker_.reset();
    metrics_ = std::make_unique<BrokerMetrics>(registry_);
    auto store = SqliteEventStore::Open(dir_.path(), SyncPolicy::kNormal);
    ASSERT_TRUE(store.ok()) << store.status();
    config_.run_housekeeping = false;
    auto faulty = std::make_unique<FaultyStore>(*std::move(store));
    faulty_ = faulty.get();
    auto b = Broker::Create(config_, std::move(faulty), &clock_, metrics_.get());
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  PublishResult Publish(events::v1::Event ev) {
    auto r = broker_->PublishAndWait({std::move(ev)});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->front() : PublishResult{};
  }

  std::shared_ptr<Subscription> Subscribe(CollectingSink& sink, v1::SubscribeRequest req) {
    auto sub = broker_->Subscribe(req, &sink);
    EXPECT_TRUE(sub.ok()) << sub.status();
    if (!sub.ok()) return nullptr;
    sink.Attach(*sub);
    return *sub;
  }

  static v1::SubscribeRequest GroupRequest(
      const std::string& group,
      v1::SubscribeRequest::StartPosition start = v1::SubscribeRequest::EARLIEST) {
    v1::SubscribeRequest req;
    req.set_group(group);
    req.set_start(start);
    req.add_types("order.*");
    *req.mutable_ack_deadline() = TimeUtil::SecondsToDuration(30);
    return req;
  }

  absl::StatusOr<v1::AckResponse> Ack(const std::string& group, std::vector<std::string> ids) {
    v1::AckRequest req;
    req.set_group(group);
    for (auto& id : ids) req.add_ack_ids(id);
    return broker_->Ack(req);
  }

  TempDir dir_;
  FakeClock clock_;
  prometheus::Registry registry_;
  std::unique_ptr<BrokerMetrics> metrics_;
  BrokerConfig config_;
  FaultyStore* faulty_ = nullptr;  // owned by broker_
  std::unique_ptr<Broker> broker_;
};

}  // namespace switchboard::broker::test_support

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_TEST_FIXTURE_H_
