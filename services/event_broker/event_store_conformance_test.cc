// The store contract, cases about the log, dedupe, history, retention and
// the embedded store's group state (fixture: event_store_conformance.h).
#include "services/event_broker/event_store_conformance.h"

#include <sqlite3.h>

#include <filesystem>

#include "libs/common/sqlite_util.h"
#include "libs/redis/lua_batch.h"
#include "services/event_broker/redis_scripts.h"

namespace switchboard::broker::conformance {
namespace {

TEST_P(EventStoreConformance, AppendAssignsConsecutiveSequencesAndReadsBack) {
  auto store = Open();
  EXPECT_EQ(Append(*store, {MakeEvent("order.created", "a"), MakeEvent("order.paid", "b")}), 1u);
  EXPECT_EQ(Append(*store, {MakeEvent("order.shipped", "c")}), 3u);
  absl::StatusOr<std::vector<EventPtr>> evs = store->ReadAfter(1, 10);
  ASSERT_TRUE(evs.ok()) << evs.status();
  ASSERT_EQ(evs->size(), 2u);
  EXPECT_EQ((*evs)[0]->seq, 2u);
  EXPECT_EQ((*evs)[0]->Parse().sequence(), 2u);
  EXPECT_EQ((*evs)[0]->Parse().id(), "b");
  EXPECT_EQ((*evs)[0]->ingest_time, kNow);
  EXPECT_EQ((*evs)[1]->type, "order.shipped");
  EXPECT_EQ(store->ReadAfter(0, 2)->size(), 2u);
  EXPECT_TRUE(store->ReadAfter(3, 10)->empty());
  absl::StatusOr<EventPtr> one = store->ReadOne(3);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ((*one)->Parse().id(), "c");
  EXPECT_TRUE(absl::IsNotFound(store->ReadOne(4).status()));
  absl::StatusOr<StoreBounds> b = store->Bounds();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->first_seq, 1u);
  EXPECT_EQ(b->last_seq, 3u);
  EXPECT_EQ(b->count, 3u);
}

TEST_P(EventStoreConformance, EmptyStoreHasEmptyBounds) {
  auto store = Open();
  absl::StatusOr<StoreBounds> b = store->Bounds();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->first_seq, 0u);
  EXPECT_EQ(b->last_seq, 0u);
  EXPECT_EQ(b->count, 0u);
  EXPECT_EQ(*store->FirstSequenceAtOrAfter(kNow), 1u);
  EXPECT_TRUE(store->ReadIngestedSince(kNow - absl::Hours(1))->empty());
  EXPECT_TRUE(store->LoadGroups()->empty());
}

// Commits `evs`; the per-event sequences, a duplicate's being the sequence
// of the event it repeats.
std::vector<uint64_t> AppendSeqs(EventStore& store, std::vector<events::v1::Event> evs,
                                 absl::Time now = kNow) {
  absl::StatusOr<CommitResult> r = CommitEvents(store, evs, now);
  std::vector<uint64_t> out;
  if (!r.ok()) return out;
  EXPECT_EQ(r->duplicate_of.size(), evs.size());
  uint64_t next = r->first;
  for (uint64_t dup : r->duplicate_of) out.push_back(dup != 0 ? dup : next++);
  return out;
}

TEST_P(EventStoreConformance, ClientIdsAreDeduplicatedWithinTheWindow) {
  auto store = Open();
  events::v1::Event other_source = MakeEvent("order.created", "id-1");
  other_source.set_source("elsewhere");
  EXPECT_EQ(AppendSeqs(*store, {MakeEvent("order.created", "id-1"), MakeEvent("order.paid")}),
            (std::vector<uint64_t>{1, 2}));
  // Again in a later commit, twice in one batch, from another source (not a
  // duplicate), and events without a client id (never duplicates).
  EXPECT_EQ(AppendSeqs(*store, {MakeEvent("order.created", "id-1"), MakeEvent("x.y", "id-2"),
                                MakeEvent("x.y", "id-2"), other_source, MakeEvent("x.y")}),
            (std::vector<uint64_t>{1, 3, 3, 4, 5}));
  absl::StatusOr<CommitResult> r = store->Commit(WriteBatch{}, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, 0u);
  // Only appended events took sequences: no holes.
  EXPECT_EQ(store->Bounds()->count, 5u);
  EXPECT_EQ(store->Bounds()->last_seq, 5u);
  // Another process of the same store (a restarted broker, another replica)
  // knows the ids too.
  auto again = Open();
  EXPECT_EQ(AppendSeqs(*again, {MakeEvent("x.y", "id-2")}), (std::vector<uint64_t>{3}));
}

TEST_P(EventStoreConformance, DedupeWindowEnds) {
  dedupe_.window = absl::Milliseconds(300);
  auto store = Open();
  ASSERT_EQ(AppendSeqs(*store, {MakeEvent("a.b", "once")}, absl::Now()), std::vector<uint64_t>{1});
  const absl::Time committed = absl::Now();  // (the commit's time is no later)
  EXPECT_EQ(AppendSeqs(*store, {MakeEvent("a.b", "once")}, absl::Now()), std::vector<uint64_t>{1});
  // Past the window the id is new again, at once (the embedded store
  // measures the window with the commit's time, Redis with its own clock).
  absl::SleepFor(committed + dedupe_.window + absl::Milliseconds(20) - absl::Now());
  EXPECT_EQ(AppendSeqs(*store, {MakeEvent("a.b", "once")}, absl::Now()), std::vector<uint64_t>{2});
}

// Every moment of the window counts, wherever it falls: ids sent again
// about 150 ms later, over at least 1.2 s of a 400 ms window, cross the
// places where a store may split its memory of ids (Redis keeps them in
// window-long buckets of its clock).
TEST_P(EventStoreConformance, AnIdSentAgainAnywhereInTheWindowIsADuplicate) {
  dedupe_.window = absl::Milliseconds(400);
  auto store = Open();
  struct Sent {
    std::string id;
    absl::Time before;
    uint64_t seq;
  };
  std::vector<Sent> sent;
  int checked = 0;
  const absl::Time start = absl::Now();
  for (int i = 0; absl::Now() < start + absl::Milliseconds(1200) ||
                  (checked < 10 && absl::Now() < start + absl::Seconds(20));
       ++i) {
    Sent s{absl::StrCat("id-", i), absl::Now(), 0};
    std::vector<uint64_t> seqs = AppendSeqs(*store, {MakeEvent("a.b", s.id)}, absl::Now());
    ASSERT_EQ(seqs.size(), 1u);
    s.seq = seqs[0];
    sent.push_back(s);
    if (sent.size() > 3) {
      const Sent& old = sent[sent.size() - 4];
      std::vector<uint64_t> again = AppendSeqs(*store, {MakeEvent("a.b", old.id)}, absl::Now());
      // (a machine stalled past the window proves nothing either way)
      if (absl::Now() - old.before < dedupe_.window) {
        EXPECT_EQ(again, std::vector<uint64_t>{old.seq}) << old.id;
        ++checked;
      }
    }
    absl::SleepFor(absl::Milliseconds(50));  // the clock must move on
  }
  EXPECT_GE(checked, 10);
}

TEST_P(EventStoreConformance, PayloadsAreBinarySafe) {
  auto store = Open();
  // The store keeps bytes: NULs, high bytes, CR LF and braces come back as given.
  NewEvent ev = ToNewEvent(MakeEvent("blob.stored"));
  ev.payload.append(std::string("\0\x01\xff{}\r\n", 7));
  ev.payload.append(std::string(100000, '\0'));
  WriteBatch batch;
  batch.events.push_back(&ev);
  ASSERT_TRUE(store->Commit(batch, kNow).ok());
  absl::StatusOr<EventPtr> got = store->ReadOne(1);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)->payload, ev.payload);
}

TEST_P(EventStoreConformance, SequencesNeverReusedAfterRetentionAndReopen) {
  {
    auto store = Open();
    for (int i = 0; i < 10; ++i) Append(*store, {MakeEvent("order.created")});
    absl::StatusOr<uint64_t> deleted = store->ApplyRetention(kNow, absl::Hours(1), 1, 1000);
    ASSERT_TRUE(deleted.ok()) << deleted.status();
    EXPECT_EQ(*deleted, 9u);
    // Even with every event gone, the next sequence continues.
    ASSERT_TRUE(store->ApplyRetention(kNow + absl::Hours(2), absl::Hours(1), 100, 1000).ok());
    absl::StatusOr<StoreBounds> b = store->Bounds();
    EXPECT_EQ(b->count, 0u);
    EXPECT_EQ(b->last_seq, 10u);
  }
  auto store = Open();
  EXPECT_EQ(Append(*store, {MakeEvent("order.created")}), 11u);
}

TEST_P(EventStoreConformance, RetentionByAgeDeletesOnlyOldEvents) {
  auto store = Open();
  Append(*store, {MakeEvent("a.b"), MakeEvent("a.b")}, kNow - absl::Hours(48));
  Append(*store, {MakeEvent("a.b")}, kNow);
  absl::StatusOr<uint64_t> deleted = store->ApplyRetention(kNow, absl::Hours(24), 100, 1000);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(store->Bounds()->first_seq, 3u);
  // Retention removes the events from history too.
  HistoryQuery q;
  q.exact_types = {"a.b"};
  EXPECT_EQ(store->Query(q)->size(), 1u);
}

TEST_P(EventStoreConformance, RetentionDeletesAtMostMaxDeletePerCall) {
  auto store = Open();
  for (int i = 0; i < 5; ++i) {
    Append(*store, {MakeEvent("a.b"), MakeEvent("a.b")}, kNow - absl::Hours(48));
  }
  EXPECT_EQ(*store->ApplyRetention(kNow, absl::Hours(24), 100, 4), 4u);
  EXPECT_EQ(*store->ApplyRetention(kNow, absl::Hours(24), 100, 4), 4u);
  EXPECT_EQ(*store->ApplyRetention(kNow, absl::Hours(24), 100, 4), 2u);
  EXPECT_EQ(*store->ApplyRetention(kNow, absl::Hours(24), 100, 4), 0u);
  EXPECT_EQ(store->Bounds()->count, 0u);
}

TEST_P(EventStoreConformance, HistoryFiltersNewestFirst) {
  auto store = Open();
  Append(*store, {MakeEvent("order.created", "", "c1"), MakeEvent("order.paid", "", "c2"),
                  WithSubject(MakeEvent("cart.abandoned", "", "c1"), "ord_9"),
                  MakeEvent("order.completed", "", "c1")});
  HistoryQuery q;
  q.correlation_id = "c1";
  auto r = store->Query(q);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0]->type, "order.completed");
  EXPECT_EQ((*r)[2]->type, "order.created");

  q.type_prefixes = {"order."};
  r = store->Query(q);
  ASSERT_EQ(r->size(), 2u);

  HistoryQuery by_subject;
  by_subject.subject = "ord_9";
  r = store->Query(by_subject);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0]->type, "cart.abandoned");

  HistoryQuery paged;
  paged.limit = 2;
  paged.before_sequence = 4;
  r = store->Query(paged);
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0]->seq, 3u);
  EXPECT_EQ((*r)[1]->seq, 2u);

  HistoryQuery types;
  types.exact_types = {"order.paid", "cart.abandoned"};
  r = store->Query(types);
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0]->seq, 3u);
  EXPECT_EQ((*r)[1]->seq, 2u);

  HistoryQuery none;
  none.correlation_id = "nobody";
  EXPECT_TRUE(store->Query(none)->empty());
}

TEST_P(EventStoreConformance, HistoryByTypeMergesTypesAcrossManyEvents) {
  auto store = Open();
  // Enough events that every index is read in several pages.
  for (int round = 0; round < 12; ++round) {
    std::vector<events::v1::Event> batch;
    for (int i = 0; i < 100; ++i) batch.push_back(MakeEvent(i % 3 == 0 ? "job.done" : "order.x"));
    Append(*store, batch);
  }
  HistoryQuery q;
  q.type_prefixes = {"job.", "order."};
  q.limit = 1100;
  auto r = store->Query(q);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1100u);
  for (size_t i = 0; i < r->size(); ++i) ASSERT_EQ((*r)[i]->seq, 1200u - i);
  q.type_prefixes = {"job."};
  q.limit = 1000;
  r = store->Query(q);
  ASSERT_EQ(r->size(), 408u);  // i = 0, 3, ... 99 of each hundred
  EXPECT_EQ(r->front()->seq, 1200u);
  EXPECT_EQ(r->back()->seq, 1u);
}

TEST_P(EventStoreConformance, RareTypesArePagedExactlyAcrossManyEventsAndRetention) {
  auto store = Open();
  // rare.a at every 97th sequence, rare.b at every 131st: most index blocks
  // hold one of them or none, and pages cross block edges.
  std::vector<events::v1::Event> evs;
  for (uint64_t seq = 1; seq <= 20000; ++seq) {
    evs.push_back(MakeEvent(seq % 97 == 0 ? "rare.a" : seq % 131 == 0 ? "rare.b" : "bulk.x"));
  }
  Append(*store, evs, kNow - absl::Hours(48));
  std::vector<uint64_t> want;  // newest first
  for (uint64_t seq = 20000; seq >= 1; --seq) {
    if (seq % 97 == 0 || seq % 131 == 0) want.push_back(seq);
  }
  HistoryQuery q;
  q.type_prefixes = {"rare."};
  q.limit = 7;
  std::vector<uint64_t> got;
  for (int page = 0; page < 1000; ++page) {
    auto r = store->Query(q);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->empty()) break;
    for (const EventPtr& e : *r) got.push_back(e->seq);
    q.before_sequence = r->back()->seq;
  }
  EXPECT_EQ(got, want);

  HistoryQuery b;
  b.exact_types = {"rare.b"};
  b.before_sequence = 131 * 3 + 1;
  auto r = store->Query(b);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0]->seq, 393u);

  // Retention cuts inside an index block: what is left stays findable, what
  // went does not come back.
  Append(*store, {MakeEvent("rare.b")});
  ASSERT_TRUE(store->ApplyRetention(kNow, absl::Hours(24), 1'000'000, 19'500).ok());
  ASSERT_EQ(store->Bounds()->first_seq, 19501u);
  HistoryQuery all;
  all.type_prefixes = {"rare."};
  all.limit = 100;
  r = store->Query(all);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<uint64_t> left;
  for (const EventPtr& e : *r) left.push_back(e->seq);
  std::vector<uint64_t> expect = {20001};
  for (uint64_t seq = 20000; seq >= 19501; --seq) {
    if (seq % 97 == 0 || seq % 131 == 0) expect.push_back(seq);
  }
  EXPECT_EQ(left, expect);
}

// Several commits in flight, answered in the order started; on Redis also
// when the pipelined connection meets NOSCRIPT (scripts flushed) or is
// killed mid-way: each commit is applied exactly once, in order.
TEST_P(EventStoreConformance, PipelinedCommitsAreAppliedOnceInTheOrderStarted) {
  auto store = Open();
  auto start = [&](std::vector<events::v1::Event> evs, std::vector<NewEvent>* keep) {
    for (auto& e : evs) keep->push_back(ToNewEvent(e));
    WriteBatch batch;
    for (auto& e : *keep) batch.events.push_back(&e);
    return store->StartCommit(batch, kNow);
  };
  std::vector<NewEvent> a, b, c;
  auto pa = start({MakeEvent("p.a", "id-1"), MakeEvent("p.a")}, &a);
  auto pb = start({MakeEvent("p.b")}, &b);
  auto pc = start({MakeEvent("p.c", "id-1"), MakeEvent("p.c")}, &c);
  absl::StatusOr<CommitResult> ra = pa->Wait(), rb = pb->Wait(), rc = pc->Wait();
  ASSERT_TRUE(ra.ok() && rb.ok() && rc.ok()) << ra.status() << rb.status() << rc.status();
  EXPECT_EQ(ra->first, 1u);
  EXPECT_EQ(rb->first, 3u);
  EXPECT_EQ(rc->first, 4u);
  ASSERT_EQ(rc->duplicate_of.size(), 2u);
  EXPECT_EQ(rc->duplicate_of[0], 1u);  // id-1 went in with the first commit

  std::vector<std::string> disruptions;
  if (GetParam() == Backend::kRedis) disruptions = {"SCRIPT FLUSH", "CLIENT KILL TYPE normal"};
  uint64_t next = 5;
  for (const std::string& d : disruptions) {
    std::vector<NewEvent> x, y;
    auto px = start({MakeEvent("p.x")}, &x);
    auto py = start({MakeEvent("p.y"), MakeEvent("p.y")}, &y);
    absl::StatusOr<std::string> out = servers->redis->Cli(absl::StrSplit(d, ' '));
    ASSERT_TRUE(out.ok()) << d << ": " << out.status();
    std::vector<NewEvent> z;
    auto pz = start({MakeEvent("p.z")}, &z);
    absl::StatusOr<CommitResult> rx = px->Wait(), ry = py->Wait(), rz = pz->Wait();
    ASSERT_TRUE(rx.ok() && ry.ok() && rz.ok())
        << d << ": " << rx.status() << ry.status() << rz.status();
    EXPECT_EQ(rx->first, next) << d;
    EXPECT_EQ(ry->first, next + 1) << d;
    EXPECT_EQ(rz->first, next + 3) << d;
    next += 4;
  }
  absl::StatusOr<std::vector<EventPtr>> all = store->ReadAfter(0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), next - 1);  // nothing applied twice, nothing lost
  std::string types;
  for (const EventPtr& e : *all) types += e->type.substr(2) + " ";
  std::string want = "a a b c ";
  for (size_t i = 0; i < disruptions.size(); ++i) want += "x y y z ";
  EXPECT_EQ(types, want);
}

// A commit resent with its token (its reply was lost with the connection) is
// answered as its first run was, duplicates included, and applies nothing
// twice. Driven through redis-cli: the store resends only after a failure
// no test can time.
TEST_P(EventStoreConformance, ACommitResentWithItsTokenIsAnsweredAsItsFirstRun) {
  if (GetParam() != Backend::kRedis) GTEST_SKIP() << "the commit token is Redis's retry path";
  auto store = Open();
  const std::string tag = absl::StrCat("{", prefix_, "}");
  auto commit = [&](const std::string& token, std::vector<std::string> dedupe_keys) {
    std::vector<std::string> args = {
        "EVAL",  absl::StrCat(redis::kLuaBatch, redis_scripts::kCommit),
        "1",     tag + ":seq",
        tag,     token,
        "60000", "1",
        "60000", "60000",
        "0",     absl::StrCat(dedupe_keys.size())};
    for (const std::string& k : dedupe_keys) {
      args.insert(args.end(), {"t.a", "", "", k, "1,1,0,0;{}"});
    }
    args.push_back("0");
    return servers->redis->Cli(args);
  };
  ASSERT_EQ(*commit("first", {"k0"}), "1\n0");
  // k0 seen before, k1 new, k1 again in the batch, one without a key.
  const std::string want = "2\n1\n0\n2\n0";
  absl::StatusOr<std::string> once = commit("second", {"k0", "k1", "k1", ""});
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(*once, want);
  absl::StatusOr<std::string> again = commit("second", {"k0", "k1", "k1", ""});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, want);
  EXPECT_EQ(*servers->redis->Cli({"GET", tag + ":seq"}), "3");
  EXPECT_EQ(*servers->redis->Cli({"XLEN", tag + ":log"}), "3");
}

TEST_P(EventStoreConformance, ALargeCommitOfOneTypeIsIndexed) {
  auto store = Open();
  std::vector<events::v1::Event> evs(10000, MakeEvent("bulk.loaded"));
  EXPECT_EQ(Append(*store, evs), 1u);
  HistoryQuery q;
  q.exact_types = {"bulk.loaded"};
  q.limit = 10000;
  auto r = store->Query(q);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 10000u);
  EXPECT_EQ(r->back()->seq, 1u);
}

TEST_P(EventStoreConformance, HistorySinceFiltersOnEventTime) {
  auto store = Open();
  Append(*store,
         {WithTime(MakeEvent("a.b"), kNow - absl::Hours(3)),
          WithTime(MakeEvent("a.b"), kNow - absl::Hours(1)), WithTime(MakeEvent("a.c"), kNow)});
  HistoryQuery q;
  q.since = kNow - absl::Hours(2);
  auto r = store->Query(q);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1]->seq, 2u);
  q.exact_types = {"a.b"};
  EXPECT_EQ(store->Query(q)->size(), 1u);
}

TEST_P(EventStoreConformance, TimeLookupsUseIngestTime) {
  auto store = Open();
  Append(*store, {MakeEvent("a.b")}, kNow - absl::Minutes(10));
  Append(*store, {MakeEvent("a.b"), MakeEvent("a.b")}, kNow - absl::Minutes(5));
  Append(*store, {MakeEvent("a.b")}, kNow);
  EXPECT_EQ(*store->FirstSequenceAtOrAfter(kNow - absl::Hours(1)), 1u);
  EXPECT_EQ(*store->FirstSequenceAtOrAfter(kNow - absl::Minutes(7)), 2u);
  EXPECT_EQ(*store->FirstSequenceAtOrAfter(kNow), 4u);
  EXPECT_EQ(*store->FirstSequenceAtOrAfter(kNow + absl::Seconds(1)), 5u);
  absl::StatusOr<std::vector<EventPtr>> recent = store->ReadIngestedSince(kNow - absl::Minutes(6));
  ASSERT_TRUE(recent.ok()) << recent.status();
  ASSERT_EQ(recent->size(), 3u);
  EXPECT_EQ(recent->front()->seq, 2u);
}

TEST_P(EventStoreConformance, GroupCursorPendingAndDeadLettersPersist) {
  {
    auto store = Open();
    Append(*store, {MakeEvent("a.b"), MakeEvent("a.b"), MakeEvent("a.b")});
    GroupOp create{GroupOp::Kind::kUpsertGroup};
    create.group = GroupRecord{"workers", {"a.*", "b.c"}, 0, 4};
    GroupOp cursor = Op(GroupOp::Kind::kSetCursor, "workers");
    cursor.group.cursor = 3;
    GroupOp dead = Op(GroupOp::Kind::kDeadLetter, "workers", 3, 4);
    dead.event = *store->ReadOne(3);
    dead.error =
        "payment provider said: carte refus\xc3\xa9"
        "e";
    ASSERT_TRUE(CommitOps(*store, {create, cursor, Op(GroupOp::Kind::kSetPending, "workers", 2, 2),
                                   Op(GroupOp::Kind::kSetPending, "workers", 3, 4), dead})
                    .ok());
  }
  auto store = Open();
  auto groups = store->LoadGroups();
  ASSERT_TRUE(groups.ok()) << groups.status();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].name, "workers");
  EXPECT_EQ((*groups)[0].cursor, 3u);
  EXPECT_EQ((*groups)[0].max_deliveries, 4u);
  EXPECT_EQ((*groups)[0].types, (std::vector<std::string>{"a.*", "b.c"}));
  auto pending = store->LoadPending("workers");
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 1u);  // the dead letter left pending
  EXPECT_EQ((*pending)[0].seq, 2u);
  EXPECT_EQ((*pending)[0].attempts, 2u);
  auto dead = store->ListDeadLetters("workers", 0, 10);
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].event->seq, 3u);
  EXPECT_EQ((*dead)[0].event->type, "a.b");
  EXPECT_EQ((*dead)[0].attempts, 4u);
  EXPECT_EQ((*dead)[0].dead_at, kNow);
  EXPECT_EQ((*dead)[0].last_error,
            "payment provider said: carte refus\xc3\xa9"
            "e");
  EXPECT_EQ(*store->CountDeadLetters("workers"), 1u);
  EXPECT_TRUE(store->LoadPending("nobody")->empty());
}

TEST_P(EventStoreConformance, GroupChangesFollowTheContract) {
  auto store = Open();
  Append(*store, {MakeEvent("a.b"), MakeEvent("a.b"), MakeEvent("a.b"), MakeEvent("a.b")});
  GroupOp create{GroupOp::Kind::kUpsertGroup};
  create.group = GroupRecord{"g", {"a.*"}, 2, 5};
  ASSERT_TRUE(CommitOps(*store, {create}).ok());
  // Upserting again changes types and max_deliveries but keeps the cursor.
  create.group = GroupRecord{"g", {"a.b"}, 0, 7};
  GroupOp back = Op(GroupOp::Kind::kSetCursor, "g");
  back.group.cursor = 1;  // a cursor never moves back
  ASSERT_TRUE(CommitOps(*store, {create, back}).ok());
  auto groups = store->LoadGroups();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].cursor, 2u);
  EXPECT_EQ((*groups)[0].max_deliveries, 7u);
  EXPECT_EQ((*groups)[0].types, std::vector<std::string>{"a.b"});

  ASSERT_TRUE(CommitOps(*store, {Op(GroupOp::Kind::kSetPending, "g", 1, 1),
                                 Op(GroupOp::Kind::kSetPending, "g", 2, 1),
                                 Op(GroupOp::Kind::kSetPending, "g", 1, 3),
                                 Op(GroupOp::Kind::kRemovePending, "g", 2)})
                  .ok());
  auto pending = store->LoadPending("g");
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].attempts, 3u);

  std::vector<GroupOp> letters;
  for (uint64_t s = 1; s <= 4; ++s) {
    GroupOp d = Op(GroupOp::Kind::kDeadLetter, "g", s, 5);
    d.event = *store->ReadOne(s);
    letters.push_back(d);
  }
  ASSERT_TRUE(CommitOps(*store, letters).ok());
  EXPECT_TRUE(store->LoadPending("g")->empty());
  auto page = store->ListDeadLetters("g", 1, 2);
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].event->seq, 2u);
  EXPECT_EQ((*page)[1].event->seq, 3u);
  ASSERT_TRUE(CommitOps(*store, {Op(GroupOp::Kind::kRemoveDeadLetter, "g", 2)}).ok());
  EXPECT_EQ(*store->CountDeadLetters("g"), 3u);
  // Dead letters keep their event after retention deleted it from the log.
  ASSERT_TRUE(store->ApplyRetention(kNow + absl::Hours(100), absl::Hours(1), 100, 100).ok());
  EXPECT_EQ(store->Bounds()->count, 0u);
  auto kept = store->ListDeadLetters("g", 0, 10);
  ASSERT_EQ(kept->size(), 3u);
  EXPECT_EQ(kept->back().event->Parse().type(), "a.b");
}

INSTANTIATE_TEST_SUITE_P(Stores, EventStoreConformance, testing::kAllBackends, BackendName);

TEST(SqliteStoreTest, BadDataDirIsNamed) {
  auto s = SqliteEventStore::Open("/proc/no/such/dir", SyncPolicy::kNormal);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("data_dir"), std::string::npos) << s.status();
}

// A data directory written before dead letters had last_error opens: its
// letters read back with none, and new ones keep theirs.
TEST(SqliteStoreTest, OpensDeadLettersWrittenBeforeLastError) {
  TempDir dir;
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((std::filesystem::path(dir.path()) / "events.db").c_str(), &db),
              SQLITE_OK);
    ASSERT_TRUE(sqlite::Exec(db,
                             "CREATE TABLE dead_letters(grp TEXT NOT NULL, seq INTEGER NOT NULL, "
                             "attempts INTEGER NOT NULL, dead_us INTEGER NOT NULL, ingest_us "
                             "INTEGER NOT NULL, type TEXT NOT NULL, payload BLOB NOT NULL, "
                             "PRIMARY KEY(grp, seq)) WITHOUT ROWID;"
                             "INSERT INTO dead_letters VALUES('g', 7, 5, 1, 1, 'a.b', x'00');")
                    .ok());
    sqlite3_close(db);
  }
  auto store = SqliteEventStore::Open(dir.path(), SyncPolicy::kNormal);
  ASSERT_TRUE(store.ok()) << store.status();
  Append(**store, {MakeEvent("a.b")});
  GroupOp dead = Op(GroupOp::Kind::kDeadLetter, "g", 1, 5);
  dead.event = *(*store)->ReadOne(1);
  dead.error = "nacked";
  ASSERT_TRUE(CommitOps(**store, {dead}).ok());
  auto letters = (*store)->ListDeadLetters("g", 0, 10);
  ASSERT_TRUE(letters.ok()) << letters.status();
  ASSERT_EQ(letters->size(), 2u);
  EXPECT_EQ((*letters)[0].last_error, "nacked");
  EXPECT_EQ((*letters)[1].event->seq, 7u);
  EXPECT_EQ((*letters)[1].attempts, 5u);
  EXPECT_EQ((*letters)[1].last_error, "");
}

}  // namespace
}  // namespace switchboard::broker::conformance
