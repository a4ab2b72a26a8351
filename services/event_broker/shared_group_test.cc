// When a shared group (the group state in a shared store) asks the store for
// deliveries: for what may be claimable there, once, and again after a claim
// that may have read the store before something new was there.
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/event_broker/broker.h"
#include "services/event_broker/broker_test_fixture.h"
#include "services/event_broker/forwarding_store.h"
#include "services/event_broker/testing/memory_store.h"

namespace switchboard::broker {
namespace {

using google::protobuf::util::TimeUtil;
using test_support::CollectingSink;

// A shared in-memory store that counts claims and can hold a claim's answer
// after it has read the store (as a claim in flight to Redis that has run).
class GatedClaimStore : public ForwardingEventStore {
 public:
  GatedClaimStore() : ForwardingEventStore(std::make_unique<MemoryEventStore>()) {}

  absl::StatusOr<ClaimResult> Claim(const ClaimRequest& request, absl::Time now) override {
    absl::StatusOr<ClaimResult> r = ForwardingEventStore::Claim(request, now);
    absl::MutexLock lock(&mu_);
    ++claims_;
    ++held_;
    mu_.Await(absl::Condition(&open_));
    --held_;
    return r;
  }

  void SetGate(bool open) {
    absl::MutexLock lock(&mu_);
    open_ = open;
  }
  bool WaitForHeldClaim() {
    absl::MutexLock lock(&mu_);
    auto held = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&held), absl::Seconds(10));
  }
  bool WaitForClaims(int n) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return claims_ >= n && held_ == 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(10));
  }
  int claims() {
    absl::MutexLock lock(&mu_);
    return claims_;
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  int claims_ ABSL_GUARDED_BY(mu_) = 0;
};

class SharedGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_ = std::make_unique<BrokerMetrics>(registry_);
    config_.run_housekeeping = false;  // no reconcile: only what the test does claims
    auto store = std::make_unique<GatedClaimStore>();
    store_ = store.get();
    auto b = Broker::Create(config_, std::move(store), &clock_, metrics_.get());
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  std::shared_ptr<Subscription> Join(CollectingSink& sink) {
    v1::SubscribeRequest req;
    req.set_group("g");
    req.add_types("order.*");
    *req.mutable_ack_deadline() = TimeUtil::SecondsToDuration(30);
    auto sub = broker_->Subscribe(req, &sink);
    EXPECT_TRUE(sub.ok()) << sub.status();
    if (!sub.ok()) return nullptr;
    sink.Attach(*sub);
    return *sub;
  }

  void Publish() { ASSERT_TRUE(broker_->PublishAndWait({MakeEvent("order.created")}).ok()); }

  FakeClock clock_;
  prometheus::Registry registry_;
  std::unique_ptr<BrokerMetrics> metrics_;
  BrokerConfig config_;
  GatedClaimStore* store_ = nullptr;  // owned by broker_
  std::unique_ptr<Broker> broker_;
};

// A member joins (a claim, for what the store may hold); one event is
// published, handed out and acked. Neither the hand-out nor the ack finds the
// store with anything new: neither asks it (each such claim is a Redis round
// trip, and one in flight makes the next event wait for it).
TEST_F(SharedGroupTest, AHandOutOrAnAckClaimsOnlyWhatMayBeWaiting) {
  CollectingSink sink;
  auto sub = Join(sink);
  ASSERT_TRUE(store_->WaitForClaims(1));
  Publish();
  std::vector<Outgoing> got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  v1::AckRequest ack;
  ack.set_group("g");
  ack.add_ack_ids(got[0].ack_id);
  ASSERT_TRUE(broker_->Ack(ack).ok());
  Publish();  // a later event is claimed and delivered as before
  ASSERT_EQ(sink.WaitFor(2).size(), 2u);
  EXPECT_EQ(store_->claims(), 3) << "one claim for the join and one for each event";
}

// A claim already reading the store when an event is stored may answer
// without it ("no more"): the group claims again once it ends, with no ack,
// hand-out or other event to prompt it.
TEST_F(SharedGroupTest, AnEventStoredDuringAClaimIsClaimedWhenItEnds) {
  // The tail offers events in order, each to the broadcast subscribers and
  // then to the groups: once this watcher has an event published after the
  // group's, the group has been offered its event.
  CollectingSink watcher;
  v1::SubscribeRequest all;
  all.add_types("order.*");
  all.add_types("audit.*");
  auto watching = broker_->Subscribe(all, &watcher);
  ASSERT_TRUE(watching.ok()) << watching.status();
  watcher.Attach(*watching);
  CollectingSink first, second;
  auto a = Join(first);
  ASSERT_TRUE(store_->WaitForClaims(1));
  store_->SetGate(false);
  auto b = Join(second);  // a claim that reads the empty store, then waits
  ASSERT_TRUE(store_->WaitForHeldClaim());
  Publish();
  ASSERT_EQ(watcher.WaitFor(1).size(), 1u);
  ASSERT_TRUE(broker_->PublishAndWait({MakeEvent("audit.noted")}).ok());  // not the group's
  ASSERT_EQ(watcher.WaitFor(2).size(), 2u);
  store_->SetGate(true);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (first.count() + second.count() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(first.count() + second.count(), 1u) << "the event was left in the store";
}

// A delivery nacked with a delay is claimed again at the first housekeeping
// pass after it comes due, not only at the next reconcile (250 ms apart).
TEST_F(SharedGroupTest, ADeliveryNackedWithADelayIsClaimedWhenItComesDue) {
  CollectingSink sink;
  auto sub = Join(sink);
  ASSERT_TRUE(store_->WaitForClaims(1));  // the join's, before the event is there
  Publish();
  std::vector<Outgoing> got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  broker_->Tick();  // the reconcile, now: the next is 250 ms away
  ASSERT_TRUE(store_->WaitForClaims(3));
  int claims = store_->claims();
  v1::NackRequest nack;
  nack.set_group("g");
  nack.add_ack_ids(got[0].ack_id);
  *nack.mutable_delay() = TimeUtil::MillisecondsToDuration(100);
  ASSERT_TRUE(broker_->Nack(nack).ok());
  clock_.Advance(absl::Milliseconds(50));
  broker_->Tick();
  EXPECT_EQ(store_->claims(), claims) << "not due yet: nothing to claim";
  clock_.Advance(absl::Milliseconds(60));
  broker_->Tick();
  std::vector<Outgoing> again = sink.WaitFor(2);
  ASSERT_EQ(again.size(), 2u) << "the nacked delivery came due 150 ms before the next reconcile";
  EXPECT_EQ(again[1].event->seq, got[0].event->seq);
  EXPECT_EQ(again[1].attempt, 2u);
}

}  // namespace
}  // namespace switchboard::broker
