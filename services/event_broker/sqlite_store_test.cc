#include "services/event_broker/sqlite_store.h"

#include "gtest/gtest.h"
#include "services/event_broker/test_util.h"

namespace switchboard::broker {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1700000000);

std::unique_ptr<SqliteEventStore> OpenStore(const TempDir& dir) {
  absl::StatusOr<std::unique_ptr<SqliteEventStore>> s =
      SqliteEventStore::Open(dir.path(), SyncPolicy::kNormal);
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

uint64_t Append(EventStore& store, std::vector<events::v1::Event> evs, absl::Time now = kNow) {
  WriteBatch batch;
  std::vector<NewEvent> prepared;
  for (auto& e : evs) prepared.push_back(ToNewEvent(e));
  for (auto& e : prepared) batch.events.push_back(&e);
  absl::StatusOr<uint64_t> first = store.Commit(batch, now);
  EXPECT_TRUE(first.ok()) << first.status();
  return *first;
}

TEST(SqliteStoreTest, AppendAssignsConsecutiveSequencesAndReadsBack) {
  TempDir dir;
  auto store = OpenStore(dir);
  EXPECT_EQ(Append(*store, {MakeEvent("order.created", "a"), MakeEvent("order.paid", "b")}), 1u);
  EXPECT_EQ(Append(*store, {MakeEvent("order.shipped", "c")}), 3u);
  absl::StatusOr<std::vector<EventPtr>> evs = store->ReadAfter(1, 10);
  ASSERT_TRUE(evs.ok());
  ASSERT_EQ(evs->size(), 2u);
  EXPECT_EQ((*evs)[0]->seq, 2u);
  EXPECT_EQ((*evs)[0]->Parse().sequence(), 2u);
  EXPECT_EQ((*evs)[0]->Parse().id(), "b");
  EXPECT_EQ((*evs)[1]->type, "order.shipped");
}

TEST(SqliteStoreTest, SequencesNeverReusedAfterRetentionAndReopen) {
  TempDir dir;
  {
    auto store = OpenStore(dir);
    for (int i = 0; i < 10; ++i) Append(*store, {MakeEvent("order.created")});
    absl::StatusOr<uint64_t> deleted =
        store->ApplyRetention(kNow, absl::Hours(1), /*max_count=*/0 + 1, 1000);
    ASSERT_TRUE(deleted.ok());
    EXPECT_EQ(*deleted, 9u);
    // Even with every event gone, the next sequence continues.
    ASSERT_TRUE(store->ApplyRetention(kNow + absl::Hours(2), absl::Hours(1), 100, 1000).ok());
    absl::StatusOr<StoreBounds> b = store->Bounds();
    EXPECT_EQ(b->count, 0u);
    EXPECT_EQ(b->last_seq, 10u);
  }
  auto store = OpenStore(dir);
  EXPECT_EQ(Append(*store, {MakeEvent("order.created")}), 11u);
}

TEST(SqliteStoreTest, RetentionByAgeDeletesOnlyOldEvents) {
  TempDir dir;
  auto store = OpenStore(dir);
  Append(*store, {MakeEvent("a.b"), MakeEvent("a.b")}, kNow - absl::Hours(48));
  Append(*store, {MakeEvent("a.b")}, kNow);
  absl::StatusOr<uint64_t> deleted = store->ApplyRetention(kNow, absl::Hours(24), 100, 1000);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 2u);
  EXPECT_EQ(store->Bounds()->first_seq, 3u);
}

TEST(SqliteStoreTest, HistoryFiltersNewestFirst) {
  TempDir dir;
  auto store = OpenStore(dir);
  auto with_subject = [](events::v1::Event e, std::string s) {
    e.set_subject(s);
    return e;
  };
  Append(*store, {MakeEvent("order.created", "", "c1"), MakeEvent("order.paid", "", "c2"),
                  with_subject(MakeEvent("cart.abandoned", "", "c1"), "ord_9"),
                  MakeEvent("order.completed", "", "c1")});
  HistoryQuery q;
  q.correlation_id = "c1";
  auto r = store->Query(q);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0]->type, "order.completed");
  EXPECT_EQ((*r)[2]->type, "order.created");

  q.type_prefixes = {"order."};
  r = store->Query(q);
  ASSERT_EQ(r->size(), 2u);

  HistoryQuery by_subject;
  by_subject.subject = "ord_9";
  EXPECT_EQ(store->Query(by_subject)->size(), 1u);

  HistoryQuery paged;
  paged.limit = 2;
  paged.before_sequence = 4;
  r = store->Query(paged);
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0]->seq, 3u);
  EXPECT_EQ((*r)[1]->seq, 2u);
}

TEST(SqliteStoreTest, GroupCursorPendingAndDeadLettersPersist) {
  TempDir dir;
  {
    auto store = OpenStore(dir);
    Append(*store, {MakeEvent("a.b"), MakeEvent("a.b"), MakeEvent("a.b")});
    WriteBatch batch;
    GroupOp create{GroupOp::Kind::kUpsertGroup};
    create.group = GroupRecord{"workers", {"a.*"}, 0, 4};
    GroupOp cursor{GroupOp::Kind::kSetCursor};
    cursor.group.name = "workers";
    cursor.group.cursor = 3;
    GroupOp pending{GroupOp::Kind::kSetPending};
    pending.group.name = "workers";
    pending.seq = 2;
    pending.attempts = 2;
    GroupOp dead{GroupOp::Kind::kDeadLetter};
    dead.group.name = "workers";
    dead.seq = 3;
    dead.attempts = 4;
    dead.event = *store->ReadOne(3);
    batch.ops = {create, cursor, pending, dead};
    ASSERT_TRUE(store->Commit(batch, kNow).ok());
  }
  auto store = OpenStore(dir);
  auto groups = store->LoadGroups();
  ASSERT_TRUE(groups.ok());
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].name, "workers");
  EXPECT_EQ((*groups)[0].cursor, 3u);
  EXPECT_EQ((*groups)[0].max_deliveries, 4u);
  EXPECT_EQ((*groups)[0].types, std::vector<std::string>{"a.*"});
  auto pending = store->LoadPending("workers");
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].seq, 2u);
  EXPECT_EQ((*pending)[0].attempts, 2u);
  auto dead = store->ListDeadLetters("workers", 0, 10);
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].event->seq, 3u);
  EXPECT_EQ((*dead)[0].attempts, 4u);
  EXPECT_EQ(*store->CountDeadLetters("workers"), 1u);
}

TEST(SqliteStoreTest, BadDataDirIsNamed) {
  auto s = SqliteEventStore::Open("/proc/no/such/dir", SyncPolicy::kNormal);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("data_dir"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace switchboard::broker
