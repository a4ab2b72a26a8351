// The writer on a store that pipelines commits (Redis): a commit of
// publishes is sent and the next one started before the first is answered;
// answers, sequences and deliveries stay in order. (Group state never goes
// through the writer on a shared store, and the embedded one does not
// pipeline.)
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/event_broker/broker.h"
#include "services/event_broker/broker_test_fixture.h"
#include "services/event_broker/forwarding_store.h"
#include "services/event_broker/testing/memory_store.h"

namespace switchboard::broker {
namespace {

using test_support::CollectingSink;

// A shared in-memory store whose commits are applied when waited for, as a
// remote store's are answered later; the first StartCommit can be held so
// that publishes queue up behind it.
class PipeliningStore : public ForwardingEventStore {
 public:
  PipeliningStore() : ForwardingEventStore(std::make_unique<MemoryEventStore>()) {}

  bool pipelines_commits() const override { return true; }

  std::unique_ptr<PendingCommit> StartCommit(const WriteBatch& batch, absl::Time now) override {
    auto p = std::make_unique<Deferred>(this, now);
    for (const NewEvent* e : batch.events) p->events.push_back(*e);
    p->batch.ops = batch.ops;
    p->batch.seq_floor = batch.seq_floor;
    for (NewEvent& e : p->events) p->batch.events.push_back(&e);
    absl::MutexLock lock(&mu_);
    ++held_;
    mu_.Await(absl::Condition(&start_open_));
    --held_;
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    return p;
  }

  void SetStartGate(bool open) {
    absl::MutexLock lock(&mu_);
    start_open_ = open;
  }
  bool WaitForHeldStart() {
    absl::MutexLock lock(&mu_);
    auto held = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&held), absl::Seconds(10));
  }
  int max_in_flight() {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }

 private:
  struct Deferred : PendingCommit {
    Deferred(PipeliningStore* store, absl::Time now) : store(store), now(now) {}
    absl::StatusOr<CommitResult> Wait() override {
      absl::StatusOr<CommitResult> r = store->Commit(batch, now);
      absl::MutexLock lock(&store->mu_);
      --store->in_flight_;
      return r;
    }
    PipeliningStore* store;
    absl::Time now;
    std::vector<NewEvent> events;
    WriteBatch batch;
  };

  absl::Mutex mu_;
  bool start_open_ ABSL_GUARDED_BY(mu_) = true;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

class BrokerPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_ = std::make_unique<BrokerMetrics>(registry_);
    config_.run_housekeeping = false;
    config_.max_commit_bytes = 1;  // one publish per commit
    auto store = std::make_unique<PipeliningStore>();
    store_ = store.get();
    auto b = Broker::Create(config_, std::move(store), &clock_, metrics_.get());
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  FakeClock clock_;
  prometheus::Registry registry_;
  std::unique_ptr<BrokerMetrics> metrics_;
  BrokerConfig config_;
  PipeliningStore* store_ = nullptr;  // owned by broker_
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerPipelineTest, CommitsOverlapAndEverythingStaysInOrder) {
  CollectingSink sink;
  v1::SubscribeRequest req;
  req.add_types("order.*");
  auto sub = broker_->Subscribe(req, &sink);
  ASSERT_TRUE(sub.ok()) << sub.status();
  sink.Attach(*sub);

  constexpr int kPublishes = 20;
  absl::Mutex mu;
  std::vector<uint64_t> answered;  // sequences, in the order answered
  auto done = [&](absl::StatusOr<std::vector<PublishResult>> r) {
    ASSERT_TRUE(r.ok()) << r.status();
    absl::MutexLock lock(&mu);
    answered.push_back(r->front().sequence);
  };
  store_->SetStartGate(false);
  broker_->Publish({MakeEvent("order.created")}, done);
  ASSERT_TRUE(store_->WaitForHeldStart()) << "the writer is sending the first commit";
  for (int i = 1; i < kPublishes; ++i) broker_->Publish({MakeEvent("order.created")}, done);
  store_->SetStartGate(true);
  broker_->FlushWrites();
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(answered.size(), static_cast<size_t>(kPublishes))
        << "FlushWrites returned before every pipelined commit was answered";
    for (int i = 0; i < kPublishes; ++i) EXPECT_EQ(answered[i], static_cast<uint64_t>(i + 1));
  }
  EXPECT_EQ(store_->max_in_flight(), 2) << "the next commit is sent before the last is answered";
  std::vector<Outgoing> got = sink.WaitFor(kPublishes);
  ASSERT_EQ(got.size(), static_cast<size_t>(kPublishes));
  for (int i = 0; i < kPublishes; ++i) EXPECT_EQ(got[i].event->seq, static_cast<uint64_t>(i + 1));
}

}  // namespace
}  // namespace switchboard::broker
