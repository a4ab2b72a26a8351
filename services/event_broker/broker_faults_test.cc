// The broker when its store misbehaves or it is overloaded or stopping:
// refused group state, a full publish queue, retention in chunks, replays in
// bounded calls, publishes and subscriptions racing shutdown, store outages.
#include "services/event_broker/broker_test_fixture.h"

namespace switchboard::broker {
namespace {

using namespace ::switchboard::broker::test_support;  // NOLINT: the fixture's names

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
