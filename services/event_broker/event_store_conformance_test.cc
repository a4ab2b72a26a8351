// The EventStore contract, run against every implementation: the embedded
// SQLite store, the Redis store on a real standalone redis-server and on a
// real 3-master Redis Cluster (started once per suite on loopback ports), and
// MemoryEventStore, the in-memory fake of a shared store for unit tests
// (every Open() of a test is a store over that test's one MemoryStoreState,
// like replicas sharing one Redis).
#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/redis/redis_metrics.h"
#include "prometheus/registry.h"
#include "services/event_broker/redis_store.h"
#include "services/event_broker/sqlite_store.h"
#include "services/event_broker/test_util.h"
#include "services/event_broker/testing/memory_store.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

namespace switchboard::broker {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

enum class Backend { kSqlite, kRedis, kRedisCluster, kMemory };

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::kSqlite:
      return "Sqlite";
    case Backend::kRedis:
      return "Redis";
    case Backend::kRedisCluster:
      return "RedisCluster";
    case Backend::kMemory:
      return "Memory";
  }
  return "Unknown";
}

// Servers shared by every test of the suite; each test has its own data (a
// directory, or a key prefix).
struct Servers {
  std::unique_ptr<testing::RedisServer> redis;
  std::unique_ptr<testing::RedisCluster> cluster;
  prometheus::Registry registry;
  redis::RedisMetrics metrics{registry, "test"};
};
Servers* servers = nullptr;

class EventStoreConformance : public ::testing::TestWithParam<Backend> {
 public:
  static void SetUpTestSuite() { servers = new Servers; }
  static void TearDownTestSuite() {
    delete servers;
    servers = nullptr;
  }

 protected:
  // Starts only the server this test needs (CTest runs each test in its own
  // process; a run of the whole binary shares them).
  void SetUp() override {
    static int n = 0;
    prefix_ = absl::StrCat("conf", ++n, "-", getpid());
    if (GetParam() == Backend::kRedis && !servers->redis) {
      absl::StatusOr<std::unique_ptr<testing::RedisServer>> r = testing::RedisServer::Start();
      ASSERT_TRUE(r.ok()) << r.status();
      servers->redis = *std::move(r);
    }
    if (GetParam() == Backend::kRedisCluster && !servers->cluster) {
      absl::StatusOr<std::unique_ptr<testing::RedisCluster>> c = testing::RedisCluster::Start(3, 0);
      ASSERT_TRUE(c.ok()) << c.status();
      servers->cluster = *std::move(c);
    }
  }

  // A store over this test's data; a second call is the same data seen by a
  // restarted process (or by another replica, for Redis and Memory).
  std::unique_ptr<EventStore> Open() {
    if (GetParam() == Backend::kMemory) {
      return std::make_unique<MemoryEventStore>(memory_, dedupe_.window);
    }
    if (GetParam() == Backend::kSqlite) {
      absl::StatusOr<std::unique_ptr<SqliteEventStore>> s =
          SqliteEventStore::Open(dir_.path(), SyncPolicy::kNormal, dedupe_);
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? *std::move(s) : nullptr;
    }
    std::string url =
        GetParam() == Backend::kRedis ? servers->redis->url() : servers->cluster->url();
    absl::StatusOr<redis::RedisConfig> cfg = redis::ParseRedisUrl(url, "store");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    RedisStoreOptions opts;
    opts.prefix = prefix_;
    opts.dedupe_window = dedupe_.window;
    return std::make_unique<RedisEventStore>(redis::NewRedisClient(*cfg, &servers->metrics), opts);
  }

  bool shared_by_processes() const { return GetParam() != Backend::kSqlite; }

  TempDir dir_;
  std::string prefix_;
  std::shared_ptr<MemoryStoreState> memory_ = MemoryEventStore::NewState();
  DedupeOptions dedupe_;
};

uint64_t Append(EventStore& store, std::vector<events::v1::Event> evs, absl::Time now = kNow) {
  WriteBatch batch;
  std::vector<NewEvent> prepared;
  for (auto& e : evs) prepared.push_back(ToNewEvent(e));
  for (auto& e : prepared) batch.events.push_back(&e);
  absl::StatusOr<CommitResult> r = store.Commit(batch, now);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->first : 0;
}

events::v1::Event WithSubject(events::v1::Event e, std::string s) {
  e.set_subject(std::move(s));
  return e;
}

events::v1::Event WithTime(events::v1::Event e, absl::Time t) {
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(t));
  return e;
}

GroupOp Op(GroupOp::Kind kind, const std::string& group, uint64_t seq = 0, uint32_t attempts = 0) {
  GroupOp op{kind};
  op.group.name = group;
  op.seq = seq;
  op.attempts = attempts;
  return op;
}

absl::Status CommitOps(EventStore& store, std::vector<GroupOp> ops) {
  WriteBatch batch;
  batch.ops = std::move(ops);
  return store.Commit(batch, kNow).status();
}

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
  WriteBatch batch;
  std::vector<NewEvent> prepared;
  for (auto& e : evs) prepared.push_back(ToNewEvent(e));
  for (auto& e : prepared) batch.events.push_back(&e);
  absl::StatusOr<CommitResult> r = store.Commit(batch, now);
  EXPECT_TRUE(r.ok()) << r.status();
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
  EXPECT_EQ(AppendSeqs(*store, {MakeEvent("a.b", "once")}, absl::Now()), std::vector<uint64_t>{1});
  // Past the window the id is new again (the embedded store measures the
  // window with the commit's time, Redis with its own clock).
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return AppendSeqs(*store, {MakeEvent("a.b", "once")}, absl::Now()) !=
               std::vector<uint64_t>{1};
      },
      absl::Seconds(5), absl::Milliseconds(50)));
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
    if (!ack.empty()) ASSERT_TRUE(store.AckDeliveries("alt", ack).ok());
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
  EXPECT_TRUE(absl::IsInvalidArgument(b->Requeue("g", {{99, 1}}, t0).status()));
  EXPECT_EQ(*a->StillHeld("g", "replica-a", {2, 4, 6}, t0), (std::vector<uint64_t>{4, 6}));
  // Past the lease, b may claim what a held, as attempt 2.
  absl::Time later = t0 + absl::Seconds(11);
  EXPECT_TRUE(a->StillHeld("g", "replica-a", {4, 6}, later)->empty());
  rb = b->Claim(req, later);
  ASSERT_EQ(rb->deliveries.size(), 3u);  // 4 and 6 from a, 10 from b
  EXPECT_EQ(rb->redelivered, 3u);
  for (const ClaimedDelivery& d : rb->deliveries) EXPECT_EQ(d.attempt, 2u);
  // Giving back only touches what the giver still holds.
  EXPECT_EQ(*a->GiveBack("g", "replica-a", {{4, 1}, {6, 1}, {10, 1}}, later), 0u)
      << "b holds them now";
  EXPECT_EQ(*b->GiveBack("g", "replica-b", {{4, 1}}, later), 0u) << "attempt 1 is over";
  // A nack makes one due again after its delay; a longer lease keeps another.
  EXPECT_EQ(*b->Requeue("g", {{4, 1}}, later + absl::Seconds(1)), 0u) << "a stale nack";
  EXPECT_EQ(*b->Requeue("g", {{4, 2}}, later + absl::Seconds(1)), 1u);
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

INSTANTIATE_TEST_SUITE_P(Stores, EventStoreConformance,
                         ::testing::Values(Backend::kSqlite, Backend::kRedis,
                                           Backend::kRedisCluster, Backend::kMemory),
                         BackendName);

TEST(SqliteStoreTest, BadDataDirIsNamed) {
  auto s = SqliteEventStore::Open("/proc/no/such/dir", SyncPolicy::kNormal);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("data_dir"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace switchboard::broker
