// Broker logic on a real SQLite store with a fake clock: dedupe, retention,
// redelivery and dead-lettering, group cursor persistence, flow control.
#include "services/event_broker/broker.h"

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "services/event_broker/forwarding_store.h"
#include "services/event_broker/sqlite_store.h"
#include "services/event_broker/test_util.h"

namespace switchboard::broker {
namespace {

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

TEST_F(BrokerTest, DedupeWindowReturnsOriginalSequence) {
  PublishResult first = Publish(MakeEvent("order.created", "evt_client_1"));
  EXPECT_FALSE(first.duplicate);
  PublishResult again = Publish(MakeEvent("order.created", "evt_client_1"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.sequence, first.sequence);
  // Same id from another source is a different event.
  events::v1::Event other = MakeEvent("order.created", "evt_client_1");
  other.set_source("other-service");
  EXPECT_FALSE(Publish(other).duplicate);
  // A duplicate inside one batch.
  auto batch =
      broker_->PublishAndWait({MakeEvent("order.paid", "evt_b"), MakeEvent("order.paid", "evt_b")});
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE((*batch)[0].duplicate);
  EXPECT_TRUE((*batch)[1].duplicate);
  EXPECT_EQ((*batch)[0].sequence, (*batch)[1].sequence);

  clock_.Advance(absl::Minutes(3));
  PublishResult later = Publish(MakeEvent("order.created", "evt_client_1"));
  EXPECT_FALSE(later.duplicate) << "the dedupe window is 2 minutes";
  EXPECT_GT(later.sequence, first.sequence);
}

TEST_F(BrokerTest, CommitsStayUnderMaxCommitBytesAndFlushWaitsForAll) {
  config_.max_commit_bytes = 1;  // every commit takes exactly one publish
  Open();
  std::atomic<int> done{0};
  constexpr int kPublishes = 20;
  for (int i = 0; i < kPublishes; ++i) {
    absl::StatusOr<std::vector<NewEvent>> prepared = [&] {
      events::v1::Event ev = MakeEvent("order.created");
      events::v1::Event* p = &ev;
      return broker_->Prepare(absl::MakeConstSpan(&p, 1), "event");
    }();
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    broker_->Append(*std::move(prepared), [&](absl::StatusOr<std::vector<PublishResult>> r) {
      EXPECT_TRUE(r.ok()) << r.status();
      ++done;
    });
  }
  broker_->FlushWrites();
  EXPECT_EQ(done.load(), kPublishes) << "FlushWrites returned before every publish committed";
  EXPECT_EQ(broker_->last_sequence(), static_cast<uint64_t>(kPublishes));
  // One commit per publish (the first may have found one alone anyway).
  auto commits = metrics_->commit_events.Collect().histogram.sample_count;
  EXPECT_EQ(commits, static_cast<uint64_t>(kPublishes));
}

TEST_F(BrokerTest, DedupeWindowSurvivesRestart) {
  PublishResult first = Publish(MakeEvent("order.created", "evt_x"));
  Open();
  PublishResult again = Publish(MakeEvent("order.created", "evt_x"));
  EXPECT_TRUE(again.duplicate);
  EXPECT_EQ(again.sequence, first.sequence);
}

TEST_F(BrokerTest, RetentionByCountAndAge) {
  config_.retention_count = 5;
  Open();
  for (int i = 0; i < 10; ++i) Publish(MakeEvent("order.created"));
  broker_->Tick();
  auto stats = broker_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->total_events(), 5u);
  EXPECT_EQ(stats->first_sequence(), 6u);
  EXPECT_EQ(stats->last_sequence(), 10u);

  clock_.Advance(absl::Hours(24 * 8));
  Publish(MakeEvent("order.created"));
  broker_->Tick();
  stats = broker_->GetStats();
  EXPECT_EQ(stats->total_events(), 1u) << "events older than 7 days are gone";
  EXPECT_EQ(stats->first_sequence(), 11u);
}

TEST_F(BrokerTest, BroadcastGetsMatchingEventsFromStartThenLive) {
  Publish(MakeEvent("order.created"));
  Publish(MakeEvent("cart.abandoned"));
  CollectingSink sink;
  v1::SubscribeRequest req;
  req.set_start(v1::SubscribeRequest::EARLIEST);
  req.add_types("order.*");
  Subscribe(sink, req);
  Publish(MakeEvent("order.completed"));
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].event->type, "order.created");
  EXPECT_EQ(got[1].event->type, "order.completed");
  EXPECT_EQ(got[1].attempt, 1u);
  EXPECT_TRUE(got[1].ack_id.empty());
}

TEST_F(BrokerTest, StartPositions) {
  for (int i = 0; i < 5; ++i) Publish(MakeEvent("order.created"));
  CollectingSink latest, from_seq;
  v1::SubscribeRequest req;
  Subscribe(latest, req);
  req.set_start(v1::SubscribeRequest::SEQUENCE);
  req.set_start_sequence(4);
  Subscribe(from_seq, req);
  Publish(MakeEvent("order.created"));
  auto got = from_seq.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].event->seq, 4u);
  auto live = latest.WaitFor(1);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].event->seq, 6u);

  CollectingSink bad;
  req.set_start_sequence(100);
  auto sub = broker_->Subscribe(req, &bad);
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(sub.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(sub.status().message(), "start_sequence:")) << sub.status();
}

TEST_F(BrokerTest, StartAtTimeBeginsWithTheFirstEventStoredThen) {
  absl::Time t0 = clock_.Now();
  for (int i = 0; i < 3; ++i) Publish(MakeEvent("order.created"));
  clock_.Advance(absl::Hours(1));
  Publish(MakeEvent("order.paid"));
  Publish(MakeEvent("order.paid"));
  CollectingSink sink;
  v1::SubscribeRequest req;
  req.set_start(v1::SubscribeRequest::TIME);
  *req.mutable_start_time() =
      TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t0 + absl::Minutes(30)));
  Subscribe(sink, req);
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].event->seq, 4u);
  EXPECT_EQ(got[1].event->seq, 5u);
  broker_->FlushWrites();
  EXPECT_EQ(sink.count(), 2u);

  CollectingSink missing;
  req.clear_start_time();
  EXPECT_EQ(broker_->Subscribe(req, &missing).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BrokerTest, UnackedEventIsRedeliveredAfterDeadlineThenDeadLettered) {
  config_.default_max_deliveries = 3;
  Open();
  CollectingSink sink;
  v1::SubscribeRequest req = GroupRequest("workers");
  req.set_max_deliveries(3);
  Subscribe(sink, req);
  Publish(MakeEvent("order.created", "evt_1"));
  auto got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attempt, 1u);

  clock_.Advance(absl::Seconds(29));
  broker_->Tick();
  EXPECT_EQ(sink.count(), 1u) << "not before the deadline";
  clock_.Advance(absl::Seconds(2));
  broker_->Tick();
  got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].attempt, 2u);
  EXPECT_EQ(got[1].event->seq, got[0].event->seq);

  clock_.Advance(absl::Seconds(31));
  broker_->Tick();
  got = sink.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].attempt, 3u);

  clock_.Advance(absl::Seconds(31));
  broker_->Tick();
  broker_->FlushWrites();
  EXPECT_EQ(sink.count(), 3u) << "third delivery was the last";
  v1::ListDeadLettersRequest list;
  list.set_group("workers");
  auto dead = broker_->ListDeadLetters(list);
  ASSERT_TRUE(dead.ok());
  ASSERT_EQ(dead->dead_letters_size(), 1);
  EXPECT_EQ(dead->dead_letters(0).event().id(), "evt_1");
  EXPECT_EQ(dead->dead_letters(0).delivery_attempts(), 3u);
  auto stats = broker_->GetStats();
  ASSERT_EQ(stats->groups_size(), 1);
  EXPECT_EQ(stats->groups(0).dead_lettered(), 1u);
  EXPECT_EQ(stats->groups(0).redelivered(), 2u);
  EXPECT_EQ(stats->groups(0).pending(), 0u);

  // Replay puts it back with a fresh count.
  v1::ReplayDeadLettersRequest replay;
  replay.set_group("workers");
  auto replayed = broker_->ReplayDeadLetters(replay);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->replayed(), 1u);
  got = sink.WaitFor(4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].attempt, 1u);
  EXPECT_TRUE(Ack("workers", {got[3].ack_id}).ok());
  broker_->FlushWrites();
  EXPECT_EQ(broker_->ListDeadLetters(list)->dead_letters_size(), 0);
}

TEST_F(BrokerTest, NackWithDelayRedeliversAfterDelay) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  v1::NackRequest nack;
  nack.set_group("workers");
  nack.add_ack_ids(got[0].ack_id);
  *nack.mutable_delay() = TimeUtil::SecondsToDuration(5);
  ASSERT_TRUE(broker_->Nack(nack).ok());
  sink.Drain();
  EXPECT_EQ(sink.count(), 1u);
  clock_.Advance(absl::Seconds(5));
  broker_->Tick();
  got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].attempt, 2u);
}

TEST_F(BrokerTest, MembersShareWorkAndRespectMaxInFlight) {
  CollectingSink a, b;
  v1::SubscribeRequest req = GroupRequest("workers");
  req.set_max_in_flight(3);
  Subscribe(a, req);
  Subscribe(b, req);
  for (int i = 0; i < 10; ++i) Publish(MakeEvent("order.created"));
  a.WaitFor(3);
  b.WaitFor(3);
  broker_->FlushWrites();
  EXPECT_EQ(a.count(), 3u);
  EXPECT_EQ(b.count(), 3u);
  std::set<uint64_t> seen;
  for (auto& o : a.WaitFor(3)) EXPECT_TRUE(seen.insert(o.event->seq).second);
  for (auto& o : b.WaitFor(3)) EXPECT_TRUE(seen.insert(o.event->seq).second) << "delivered twice";
  // Acking frees a slot.
  ASSERT_TRUE(Ack("workers", {a.WaitFor(3)[0].ack_id}).ok());
  EXPECT_EQ(a.WaitFor(4).size(), 4u);
}

TEST_F(BrokerTest, GroupResumesFromCommittedPositionAfterRestart) {
  {
    CollectingSink sink;
    Subscribe(sink, GroupRequest("workers"));
    for (int i = 0; i < 4; ++i) Publish(MakeEvent("order.created"));
    auto got = sink.WaitFor(4);
    ASSERT_EQ(got.size(), 4u);
    ASSERT_TRUE(Ack("workers", {got[0].ack_id, got[1].ack_id, got[3].ack_id}).ok());
    broker_->FlushWrites();
  }
  Publish(MakeEvent("order.created"));  // seq 5, never delivered
  broker_->FlushWrites();
  Open();  // restart on the same data dir
  CollectingSink sink;
  // LATEST is ignored for an existing group: it resumes.
  Subscribe(sink, GroupRequest("workers", v1::SubscribeRequest::LATEST));
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  std::map<uint64_t, uint32_t> by_seq;
  for (auto& o : got) by_seq[o.event->seq] = o.attempt;
  EXPECT_THAT(by_seq, ::testing::ElementsAre(::testing::Pair(3u, 2u), ::testing::Pair(5u, 1u)));
}

TEST_F(BrokerTest, AckErrorsNameTheField) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(1);
  auto r = Ack("workers", {got[0].ack_id, "garbage"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "ack_ids[1]:")) << r.status();
  r = Ack("workers", {"99-1"});
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "ack_ids[0]: unknown ack id")) << r.status();
  r = Ack("nope", {got[0].ack_id});
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "group:")) << r.status();
  r = Ack("workers", {});
  EXPECT_EQ(r.status().message(), "ack_ids: empty");
  // Nothing changed: the event is still pending and can be acked once.
  r = Ack("workers", {got[0].ack_id});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->acked(), 1u);
  r = Ack("workers", {got[0].ack_id});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->already_acked(), 1u);
}

TEST_F(BrokerTest, PausedBroadcastSubscriberStaysBoundedAndCatchesUp) {
  config_.broadcast_buffer = 16;
  config_.cache_events = 64;
  Open();
  CollectingSink slow, fast;
  v1::SubscribeRequest req;
  slow.SetPaused(true);
  Subscribe(slow, req);
  Subscribe(fast, req);
  for (int i = 0; i < 50; ++i) {
    std::vector<events::v1::Event> batch;
    for (int j = 0; j < 20; ++j) batch.push_back(MakeEvent("order.created"));
    ASSERT_TRUE(broker_->PublishAndWait(std::move(batch)).ok());
  }
  EXPECT_EQ(fast.WaitFor(1000).size(), 1000u);
  EXPECT_EQ(slow.count(), 0u);
  slow.SetPaused(false);
  // It catches up from the store, past the in-memory cache.
  auto got = slow.WaitFor(1000);
  ASSERT_EQ(got.size(), 1000u);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].event->seq, i + 1);
}

TEST_F(BrokerTest, PublishRejectsBadInputAndStoresNothing) {
  auto r = broker_->PublishAndWait({});
  EXPECT_EQ(r.status().message(), "events: empty batch");
  r = broker_->PublishAndWait({MakeEvent("order.created"), MakeEvent("Bad")});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "events[1].type:")) << r.status();
  EXPECT_EQ(broker_->GetStats()->total_events(), 0u) << "a bad batch stores nothing";
}

// Item 11 of the robustness issue: a group-state change the store always
// refuses used to be put back in front of the queue and committed with every
// later publish, failing them all; and FlushWrites counted it as done.
TEST_F(BrokerTest, RefusedGroupStateNeverFailsPublishesAndFlushWaitsForIt) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  PublishResult poisoned = Publish(MakeEvent("order.created", "evt_p"));
  ASSERT_EQ(sink.WaitFor(1).size(), 1u);
  broker_->FlushWrites();
  faulty_->RefuseOpsFor(poisoned.sequence);
  // The ack of the delivered event is the op the store refuses from now on.
  ASSERT_TRUE(Ack("workers", {sink.WaitFor(1)[0].ack_id}).ok());
  for (int i = 0; i < 5; ++i) {
    auto r = broker_->PublishAndWait({MakeEvent("order.created")});
    ASSERT_TRUE(r.ok()) << "publish " << i << " failed with the refused op: " << r.status();
  }
  broker_->FlushWrites();
  // Flush returned only once the op was stored or finally given up on.
  EXPECT_EQ(metrics_->group_ops_dropped.Value(), 1);
  EXPECT_EQ(broker_->GetStats()->total_events(), 6u);
}

// Item 9: under overload a publish is refused, never queued without bound.
TEST_F(BrokerTest, FullPublishQueueRefusesWithResourceExhaustedAndStoresTheRest) {
  config_.max_queued_publish_bytes = 16 << 10;
  Open();
  faulty_->SetGate(false);
  absl::Mutex mu;
  int ok = 0, refused = 0, other = 0;
  auto done = [&](absl::StatusOr<std::vector<PublishResult>> r) {
    absl::MutexLock lock(&mu);
    if (r.ok()) {
      ++ok;
    } else if (r.status().code() == absl::StatusCode::kResourceExhausted) {
      ++refused;
    } else {
      ++other;
    }
  };
  events::v1::Event big = MakeEvent("order.created");
  (*big.mutable_data()->mutable_fields())["pad"].set_string_value(std::string(1000, 'x'));
  broker_->Publish({big}, done);
  ASSERT_TRUE(faulty_->WaitForHeldCommit()) << "the writer holds the first publish";
  constexpr int kMore = 100;
  for (int i = 0; i < kMore; ++i) broker_->Publish({big}, done);
  {
    absl::MutexLock lock(&mu);
    EXPECT_GT(refused, 50) << "about 16 of 100 KB fit in the queue";
    EXPECT_EQ(ok, 0);
  }
  EXPECT_GT(metrics_->publishes_refused.Value(), 50);
  faulty_->SetGate(true);
  broker_->FlushWrites();
  absl::MutexLock lock(&mu);
  auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return ok + refused + other == kMore + 1; };
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(10)));
  EXPECT_EQ(other, 0);
  EXPECT_EQ(broker_->GetStats()->total_events(), static_cast<uint64_t>(ok))
      << "every acknowledged publish is stored, and only those";
}

// Item 8: a publish racing Shutdown is always answered (it used to be
// queued after the writer had exited, and PublishAndWait blocked forever).
TEST_F(BrokerTest, PublishRacingShutdownIsAlwaysAnswered) {
  for (int round = 0; round < 20; ++round) {
    Open();
    std::atomic<int> sent{0};
    absl::Mutex mu;
    int answered = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 50; ++i) {
          ++sent;
          broker_->Publish({MakeEvent("order.created")},
                           [&](absl::StatusOr<std::vector<PublishResult>>) {
                             absl::MutexLock lock(&mu);
                             ++answered;
                           });
        }
      });
    }
    broker_->Shutdown();
    for (auto& t : threads) t.join();
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return answered == sent.load(); };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(10)))
        << "round " << round << ": " << answered << " of " << sent.load() << " answered";
  }
}

// Item 10: retention works through a large backlog in short transactions.
TEST_F(BrokerTest, RetentionDeletesInBoundedChunks) {
  config_.retention_count = 10;
  config_.retention_chunk = 100;
  Open();
  std::vector<events::v1::Event> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(MakeEvent("order.created"));
  ASSERT_TRUE(broker_->PublishAndWait(batch).ok());
  broker_->Tick();
  EXPECT_EQ(broker_->GetStats()->total_events(), 10u);
  std::vector<uint64_t> calls = faulty_->retention_calls();
  EXPECT_GE(calls.size(), 10u);
  for (uint64_t max_delete : calls) EXPECT_LE(max_delete, 100u);
}

// Item 10: deadlines expire from an ordered index; extending one moves it.
TEST_F(BrokerTest, ExtendedDeadlineIsHonouredAndExpiryStillWorks) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);
  v1::ModifyAckDeadlineRequest mod;
  mod.set_group("workers");
  mod.add_ack_ids(got[0].ack_id);
  *mod.mutable_ack_deadline() = TimeUtil::SecondsToDuration(120);
  ASSERT_TRUE(broker_->ModifyAckDeadline(mod).ok());
  clock_.Advance(absl::Seconds(31));
  broker_->Tick();
  got = sink.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].event->seq, got[1].event->seq) << "only the unextended one is redelivered";
  ASSERT_TRUE(Ack("workers", {got[2].ack_id}).ok());
  clock_.Advance(absl::Seconds(90));
  broker_->Tick();
  got = sink.WaitFor(4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].event->seq, got[0].event->seq);
}

// Item 7: one ReplayDeadLetters call loads a bounded number of dead letters;
// a longer queue is replayed by calling again.
TEST_F(BrokerTest, ReplayLoadsABoundedNumberPerCall) {
  config_.max_replay_per_call = 5;
  Open();
  CollectingSink sink;
  v1::SubscribeRequest req = GroupRequest("workers");
  req.set_max_deliveries(1);
  Subscribe(sink, req);
  for (int i = 0; i < 12; ++i) Publish(MakeEvent("order.created"));
  ASSERT_EQ(sink.WaitFor(12).size(), 12u);
  clock_.Advance(absl::Seconds(31));
  broker_->Tick();
  broker_->FlushWrites();
  sink.SetPaused(true);
  v1::ReplayDeadLettersRequest replay;
  replay.set_group("workers");
  std::vector<uint32_t> per_call;
  for (int i = 0; i < 4; ++i) {
    auto r = broker_->ReplayDeadLetters(replay);
    ASSERT_TRUE(r.ok()) << r.status();
    per_call.push_back(r->replayed());
  }
  EXPECT_EQ(per_call, (std::vector<uint32_t>{5, 5, 2, 0}));
  for (int i = 0; i < 6; ++i) replay.add_sequences(i + 1);
  auto too_many = broker_->ReplayDeadLetters(replay);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), ::testing::HasSubstr("sequences: at most 5"));
}

// A subscription accepted while Shutdown runs is always ended by it (one
// registered after Shutdown's snapshot used to stay open).
TEST_F(BrokerTest, SubscriptionsRacingShutdownAreAllEnded) {
  for (int round = 0; round < 20; ++round) {
    Open();
    constexpr int kThreads = 4, kEach = 10;
    std::vector<std::unique_ptr<CollectingSink>> sinks(kThreads * kEach);
    std::vector<std::shared_ptr<Subscription>> subs(sinks.size());
    for (auto& s : sinks) s = std::make_unique<CollectingSink>();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          size_t k = t * kEach + i;
          v1::SubscribeRequest req =
              (k % 2) ? GroupRequest(absl::StrCat("g", k % 3)) : v1::SubscribeRequest();
          auto sub = broker_->Subscribe(req, sinks[k].get());
          if (sub.ok()) subs[k] = *sub;
        }
      });
    }
    broker_->Shutdown();
    for (auto& t : threads) t.join();
    for (size_t k = 0; k < sinks.size(); ++k) {
      if (subs[k] == nullptr) continue;
      EXPECT_TRUE(sinks[k]->WaitForEnd(absl::Seconds(10)))
          << "round " << round << ": subscription " << k << " accepted but never ended";
      subs[k]->Close();
    }
  }
}

// Review finding: a refused delivery record retried later must not land
// after the ack that followed it (the acked event would come back after a
// restart).
TEST_F(BrokerTest, GroupStateKeepsItsOrderAcrossRetries) {
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  broker_->FlushWrites();
  faulty_->RefuseKind(GroupOp::Kind::kSetPending, 1, 2);
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  // The ack comes while the refused delivery record waits for its retry.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (faulty_->failed_commits() < 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));  // polling a counter, with a deadline
  }
  ASSERT_GE(faulty_->failed_commits(), 1);
  ASSERT_TRUE(Ack("workers", {got[0].ack_id}).ok());
  broker_->FlushWrites();
  sink.Close();
  Open();  // a restart: the group reloads its pending deliveries
  CollectingSink again;
  Subscribe(again, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  got = again.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event->seq, 2u) << "the acked event 1 came back";
}

// Review finding: while the store is down (longer than max_op_failures
// retries) group state waits; nothing is dropped.
TEST_F(BrokerTest, GroupStateWaitsOutAStoreOutage) {
  config_.max_op_failures = 2;
  Open();
  CollectingSink sink;
  Subscribe(sink, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  auto got = sink.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  broker_->FlushWrites();
  faulty_->SetDown(true);
  ASSERT_TRUE(Ack("workers", {got[0].ack_id}).ok());
  auto failed = broker_->PublishAndWait({MakeEvent("order.created")});
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (faulty_->failed_commits() < 8 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));  // polling a counter, with a deadline
  }
  ASSERT_GE(faulty_->failed_commits(), 8) << "the ack was retried during the outage";
  faulty_->SetDown(false);
  broker_->FlushWrites();
  EXPECT_EQ(metrics_->group_ops_dropped.Value(), 0);
  sink.Close();
  Open();
  CollectingSink again;
  Subscribe(again, GroupRequest("workers"));
  Publish(MakeEvent("order.created"));
  got = again.WaitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].event->seq, 1u) << "the ack made during the outage was lost";
}

}  // namespace
}  // namespace switchboard::broker
