// The store contract, cases about what broker replicas share: sequences and
// leased group deliveries (fixture: event_store_conformance.h; the suite is
// instantiated in event_store_conformance_test.cc).
#include "services/event_broker/event_store_conformance.h"

namespace switchboard::broker::conformance {
namespace {

TEST_P(EventStoreConformance, ReplicasSharingTheStoreNeverReuseSequences) {
  if (!shared_by_processes()) {
    GTEST_SKIP() << "the embedded store belongs to one broker process";
  }
  constexpr int kReplicas = 3, kCommits = 50;
  std::vector<std::unique_ptr<EventStore>> stores;
  for (int i = 0; i < kReplicas; ++i) stores.push_back(Open());
  std::vector<std::vector<uint64_t>> firsts(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < kCommits; ++k) {
        firsts[i].push_back(Append(*stores[i], {MakeEvent("a.b"), MakeEvent("a.b")}));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint64_t> seen;
  for (const auto& f : firsts) {
    for (uint64_t s : f) {
      EXPECT_TRUE(seen.insert(s).second) << s;
      EXPECT_TRUE(seen.insert(s + 1).second) << s + 1;
    }
  }
  EXPECT_EQ(seen.size(), 2u * kReplicas * kCommits);
  EXPECT_EQ(*seen.rbegin(), 2u * kReplicas * kCommits);
  EXPECT_EQ(stores[0]->Bounds()->count, 2u * kReplicas * kCommits);
}

// Groups on a shared store: leases, acks, redelivery, dead letters. (The
// embedded store's groups are LocalGroup's, tested in broker_test.)
// Claims alternating between replicas (each one's view of the group goes
// stale whenever the other claims), with events appended in between (a
// store that read ahead to the end of the log must still see them) and
// leases running out (redeliveries fill a claim before new events do):
// every matching event is handed out for the first time exactly once.
TEST_P(EventStoreConformance, ClaimsAlternatingBetweenReplicasMissAndRepeatNothing) {
  if (!shared_by_processes()) GTEST_SKIP() << "the embedded store keeps groups in the broker";
  auto a = Open();
  auto b = Open();
  std::vector<uint64_t> want;
  uint64_t appended = 0;
  auto append = [&](int n) {
    for (int i = 0; i < n; ++i) {
      bool match = (appended + i) % 3 != 1;
      uint64_t seq = Append(*a, {MakeEvent(match ? "order.paid" : "cart.x")});
      if (match) want.push_back(seq);
    }
    appended += n;
  };
  append(40);
  ClaimRequest req;
  req.group = GroupRecord{"alt", {"order.*"}, 0, 100};
  req.lease = absl::Seconds(10);
  std::vector<uint64_t> first;
  int redelivered = 0;
  absl::Time now = absl::Now();
  for (int round = 0; round < 300; ++round) {
    EventStore& store = round % 3 == 2 ? *b : *a;  // a twice, then b
    req.owner = &store == a.get() ? "replica-a" : "replica-b";
    req.max = 1 + round % 4;
    // Now and then every lease runs out: the next claims start with those.
    if (round % 10 == 9) now += absl::Seconds(11);
    absl::StatusOr<ClaimResult> r = store.Claim(req, now);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<uint64_t> ack;
    for (const ClaimedDelivery& d : r->deliveries) {
      EXPECT_EQ(d.event->type, "order.paid");
      if (d.attempt == 1) {
        first.push_back(d.event->seq);
      } else {
        ++redelivered;
      }
      // Some are left to run out of their lease.
      if (round % 5 != 0 || d.attempt > 1) ack.push_back(d.event->seq);
    }
    if (!ack.empty()) {
      ASSERT_TRUE(store.AckDeliveries("alt", ack).ok());
    }
    if (round == 30 || round == 60) append(25);
    if (round > 100 && r->deliveries.empty() && !r->more) break;
  }
  std::sort(first.begin(), first.end());
  EXPECT_EQ(first, want);
  EXPECT_GT(redelivered, 0) << "the test meant leases to run out";
}

TEST_P(EventStoreConformance, SharedGroupsLeaseAckAndRedeliver) {
  if (!shared_by_processes()) GTEST_SKIP() << "the embedded store keeps groups in the broker";
  auto a = Open();
  auto b = Open();
  for (int i = 0; i < 10; ++i) Append(*a, {MakeEvent(i % 2 ? "order.paid" : "cart.x")});
  ClaimRequest req;
  req.group = GroupRecord{"g", {"order.*"}, 0, 2};
  req.owner = "replica-a";
  req.max = 3;
  req.lease = absl::Seconds(10);
  absl::Time t0 = absl::Now();
  absl::StatusOr<ClaimResult> ra = a->Claim(req, t0);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_EQ(ra->deliveries.size(), 3u);
  EXPECT_TRUE(ra->more);
  EXPECT_EQ(ra->deliveries[0].event->seq, 2u);
  EXPECT_EQ(ra->deliveries[0].attempt, 1u);
  EXPECT_EQ(ra->deliveries[2].event->seq, 6u);
  // Another replica gets the rest, never what a holds.
  req.owner = "replica-b";
  req.max = 10;
  absl::StatusOr<ClaimResult> rb = b->Claim(req, t0);
  ASSERT_TRUE(rb.ok()) << rb.status();
  ASSERT_EQ(rb->deliveries.size(), 2u);
  EXPECT_EQ(rb->deliveries[0].event->seq, 8u);
  EXPECT_FALSE(rb->more);
  EXPECT_TRUE(b->Claim(req, t0)->deliveries.empty());
  // Acks through any replica; StillHeld tells a what it no longer holds.
  EXPECT_EQ(*b->AckDeliveries("g", {2, 8}), 2u);
  EXPECT_EQ(*b->AckDeliveries("g", {2}), 0u) << "acked before";
  absl::StatusOr<uint32_t> unknown = b->AckDeliveries("g", {4, 99});
  EXPECT_TRUE(absl::IsInvalidArgument(unknown.status())) << unknown.status();
  EXPECT_THAT(std::string(unknown.status().message()), ::testing::HasSubstr("ack_ids[1]"));
  EXPECT_TRUE(absl::IsInvalidArgument(b->Requeue("g", {{99, 1}}, t0, "x").status()));
  EXPECT_EQ(*a->StillHeld("g", "replica-a", {2, 4, 6}, t0), (std::vector<uint64_t>{4, 6}));
  // Past the lease, b may claim what a held, as attempt 2.
  absl::Time later = t0 + absl::Seconds(11);
  EXPECT_TRUE(a->StillHeld("g", "replica-a", {4, 6}, later)->empty());
  rb = b->Claim(req, later);
  ASSERT_EQ(rb->deliveries.size(), 3u);  // 4 and 6 from a, 10 from b
  EXPECT_EQ(rb->redelivered, 3u);
  for (const ClaimedDelivery& d : rb->deliveries) EXPECT_EQ(d.attempt, 2u);
  // Giving back only touches what the giver still holds.
  EXPECT_EQ(*a->GiveBack("g", "replica-a", {{4, 1}, {6, 1}, {10, 1}}, later, "x"), 0u)
      << "b holds them now";
  EXPECT_EQ(*b->GiveBack("g", "replica-b", {{4, 1}}, later, "x"), 0u) << "attempt 1 is over";
  // A nack makes one due again after its delay; a longer lease keeps another.
  EXPECT_EQ(*b->Requeue("g", {{4, 1}}, later + absl::Seconds(1), "x"), 0u) << "a stale nack";
  EXPECT_EQ(*b->Requeue("g", {{4, 2}}, later + absl::Seconds(1), "x"), 1u);
  EXPECT_EQ(*b->ExtendLeases("g", {{6, 1}}, later + absl::Seconds(100)), 0u);
  EXPECT_EQ(*b->ExtendLeases("g", {{6, 2}}, later + absl::Seconds(100)), 1u);
  absl::Time much_later = later + absl::Seconds(20);
  // max_deliveries is 2: 4 and 10 are dead-lettered, 6 is still leased.
  rb = b->Claim(req, much_later);
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_TRUE(rb->deliveries.empty());
  EXPECT_EQ(rb->dead_lettered, 2u);
  EXPECT_EQ(*a->CountDeadLetters("g"), 2u);
  absl::StatusOr<SharedGroupStats> st = a->GroupStats("g");
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->pending, 1u);
  EXPECT_EQ(st->cursor, 10u);
  EXPECT_EQ(st->dead_lettered, 2u);
  // Replayed dead letters are delivered again from attempt 1.
  EXPECT_EQ(*a->Revive("g", {4, 10}, much_later), 2u);
  ra = a->Claim(req, much_later);
  ASSERT_EQ(ra->deliveries.size(), 2u);
  EXPECT_EQ(ra->deliveries[0].attempt, 1u);
  EXPECT_EQ(*a->CountDeadLetters("g"), 0u);
  auto groups = a->LoadGroups();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].max_deliveries, 2u);
  // Group names are data: one named like another's key part is its own.
  ClaimRequest odd = req;
  odd.group = GroupRecord{"g:pending", {"order.*"}, 0, 5};
  absl::StatusOr<ClaimResult> ro = a->Claim(odd, much_later);
  ASSERT_TRUE(ro.ok()) << ro.status();
  EXPECT_EQ(ro->deliveries.size(), 5u);
  EXPECT_EQ(a->GroupStats("g")->pending, 3u) << "group g untouched";
  groups = a->LoadGroups();
  ASSERT_EQ(groups->size(), 2u);
  EXPECT_EQ((*groups)[1].name, "g:pending");
}

// A dead letter says what ended its last attempt: that attempt's nack
// reason, its member leaving, or its lease running out; never the reason of
// an earlier attempt.
TEST_P(EventStoreConformance, SharedDeadLettersKeepWhatEndedTheLastAttempt) {
  if (!shared_by_processes()) GTEST_SKIP() << "the embedded store keeps groups in the broker";
  auto a = Open();
  auto b = Open();
  Append(*a, {MakeEvent("job.x"), MakeEvent("job.x"), MakeEvent("job.x"), MakeEvent("job.x")});
  ClaimRequest req;
  req.group = GroupRecord{"g", {"job.*"}, 0, 2};
  req.owner = "replica-a";
  req.lease = absl::Seconds(10);
  absl::Time t0 = absl::Now();
  ASSERT_EQ(a->Claim(req, t0)->deliveries.size(), 4u);
  // Attempt 1: 1 and 2 nacked (through another replica), 3's member left.
  EXPECT_EQ(*b->Requeue("g", {{1, 1}, {2, 1}}, t0, "boom on attempt 1"), 2u);
  EXPECT_EQ(*a->GiveBack("g", "replica-a", {{3, 1}}, t0, kReasonMemberLeft), 1u);
  absl::Time t1 = t0 + absl::Seconds(1);
  absl::StatusOr<ClaimResult> r = a->Claim(req, t1);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->deliveries.size(), 3u);
  // Attempt 2: 1 runs out of its lease, 2 is nacked again, 3's member left again.
  EXPECT_EQ(*b->Requeue("g", {{2, 2}}, t1, "boom on attempt 2"), 1u);
  EXPECT_EQ(*a->GiveBack("g", "replica-a", {{3, 2}}, t1, kReasonMemberLeft), 1u);
  absl::Time t2 = t1 + absl::Seconds(11);
  r = b->Claim(req, t2);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->dead_lettered, 3u);
  ASSERT_EQ(r->deliveries.size(), 1u);  // 4, whose lease ran out: attempt 2
  EXPECT_EQ(r->deliveries[0].event->seq, 4u);
  // Any bytes of a nack's reason come back as they went in.
  std::string reason =
      "\xc3\xa9"
      "chec \xe2\x9c\x93 " +
      std::string(1000, 'x');
  EXPECT_EQ(*b->Requeue("g", {{4, 2}}, t2, reason), 1u);
  EXPECT_EQ(a->Claim(req, t2)->dead_lettered, 1u);
  absl::StatusOr<std::vector<DeadLetterRecord>> dead = b->ListDeadLetters("g", 0, 10);
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->size(), 4u);
  EXPECT_EQ((*dead)[0].last_error, kReasonExpired) << "not attempt 1's nack";
  EXPECT_EQ((*dead)[1].last_error, "boom on attempt 2");
  EXPECT_EQ((*dead)[2].last_error, kReasonMemberLeft);
  EXPECT_EQ((*dead)[3].last_error, reason);
  for (const DeadLetterRecord& d : *dead) EXPECT_EQ(d.attempts, 2u) << d.event->seq;
  // Replayed and dead again by lease: the old reason is gone with the letter.
  EXPECT_EQ(*a->Revive("g", {2}, t2), 1u);
  ASSERT_EQ(a->Claim(req, t2)->deliveries.size(), 1u);
  absl::Time t3 = t2 + absl::Seconds(11);
  ASSERT_EQ(a->Claim(req, t3)->deliveries.size(), 1u);  // attempt 2
  EXPECT_EQ(a->Claim(req, t3 + absl::Seconds(11))->dead_lettered, 1u);
  dead = a->ListDeadLetters("g", 1, 1);
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].event->seq, 2u);
  EXPECT_EQ((*dead)[0].last_error, kReasonExpired);
}

TEST_P(EventStoreConformance, SharedGroupsKeepOneFilterForEveryReplica) {
  if (!shared_by_processes()) GTEST_SKIP() << "the embedded store keeps groups in the broker";
  auto a = Open();
  auto b = Open();
  for (int i = 0; i < 4; ++i) Append(*a, {MakeEvent(i % 2 ? "order.paid" : "payment.ok")});
  ClaimRequest ra;
  ra.group = GroupRecord{"g", {"order.*"}, 0, 5};
  ra.owner = "a";
  ra.max = 1;
  absl::StatusOr<ClaimResult> r = a->Claim(ra, kNow);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->types, std::vector<std::string>{"order.*"});
  // b's member subscribed with another filter, but did not change it: b
  // claims with the stored one (and learns it).
  ClaimRequest rb = ra;
  rb.owner = "b";
  rb.max = 10;
  rb.group.types = {"payment.*"};
  r = b->Claim(rb, kNow);
  ASSERT_EQ(r->deliveries.size(), 1u);
  EXPECT_EQ(r->deliveries[0].event->type, "order.paid");
  EXPECT_EQ(r->types, std::vector<std::string>{"order.*"});
  // A changed filter is stored and holds from the cursor on.
  Append(*a, {MakeEvent("payment.ok"), MakeEvent("order.paid")});
  rb.set_types = true;
  r = b->Claim(rb, kNow);
  ASSERT_EQ(r->deliveries.size(), 1u);
  EXPECT_EQ(r->deliveries[0].event->seq, 5u);
  EXPECT_EQ(r->types, std::vector<std::string>{"payment.*"});
}

}  // namespace
}  // namespace switchboard::broker::conformance
