// DueIndex, and the embedded outbox's two ways of claiming (from the index,
// and from the table once the backlog is past Options::max_indexed) checked
// against each other on the same random workload.
#include "services/webhook_delivery/due_index.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/webhook_delivery/delivery_store.h"
#include "tests/testing/process.h"

namespace switchboard::webhooks {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> VisitAll(const DueIndex& index, int64_t now,
                                  const std::set<std::string>& skip = {}) {
  std::vector<std::string> out;
  index.Visit(now, skip, [&](const std::string& id, const std::string&) {
    out.push_back(id);
    return DueIndex::Next::kContinue;
  });
  return out;
}

TEST(DueIndexTest, VisitsDueDeliveriesEarliestFirstAcrossEndpoints) {
  DueIndex index;
  index.Put("a2", "wh_a", 10);
  index.Put("b1", "wh_b", 5);
  index.Put("a1", "wh_a", 10);
  index.Put("b2", "wh_b", 30);
  index.Put("c1", "wh_c", 20);
  index.Put("x9", "wh_0", 10);  // ties go by endpoint, then delivery id
  EXPECT_THAT(VisitAll(index, 20), ElementsAre("b1", "x9", "a1", "a2", "c1"));
  EXPECT_THAT(VisitAll(index, 20, {"wh_a"}), ElementsAre("b1", "x9", "c1"));
  // Put of a known id moves it (a retry, a redelivery); a removed one is gone.
  index.Put("b1", "wh_b", 25);
  index.Remove("a2");
  index.Remove("x9");
  index.Remove("nope");
  EXPECT_FALSE(index.Contains("a2"));
  EXPECT_TRUE(index.Contains("a1"));
  EXPECT_THAT(VisitAll(index, 100), ElementsAre("a1", "c1", "b1", "b2"));
  EXPECT_EQ(index.size(), 4u);
  index.Put("a1", "wh_a", 40);
  EXPECT_THAT(VisitAll(index, 100), ElementsAre("c1", "b1", "b2", "a1"));
}

TEST(DueIndexTest, SkippingAnEndpointDropsItsWholeBacklogAndStopEnds) {
  DueIndex index;
  for (int i = 0; i < 1000; ++i) index.Put(absl::StrCat("a", i), "wh_a", i);
  index.Put("b", "wh_b", 500);
  int calls = 0;
  std::vector<std::string> taken;
  index.Visit(10'000, {}, [&](const std::string& id, const std::string& w) {
    ++calls;
    if (w == "wh_a") return DueIndex::Next::kSkipWebhook;
    taken.push_back(id);
    return DueIndex::Next::kStop;
  });
  EXPECT_EQ(calls, 2) << "the skipped endpoint's other 999 were visited";
  EXPECT_THAT(taken, ElementsAre("b"));
}

TEST(DueIndexTest, NextDueLooksPastLeasesOnly) {
  DueIndex index;
  EXPECT_FALSE(index.NextDue({}, [](const std::string&) { return std::nullopt; }).has_value());
  index.Put("a1", "wh_a", 10);
  index.Put("a2", "wh_a", 20);
  index.Put("b1", "wh_b", 50);
  std::map<std::string, int64_t> leases = {{"a1", 100}};
  auto lease_end = [&](const std::string& id) -> std::optional<int64_t> {
    auto it = leases.find(id);
    if (it == leases.end()) return std::nullopt;
    return it->second;
  };
  EXPECT_EQ(index.NextDue({}, lease_end), 20) << "a1 is leased until 100, a2 is due at 20";
  leases["a2"] = 70;
  EXPECT_EQ(index.NextDue({}, lease_end), 50);
  EXPECT_EQ(index.NextDue({"wh_b"}, lease_end), 70);
  EXPECT_FALSE(index.NextDue({"wh_a", "wh_b"}, lease_end).has_value());
}

// The same workload on a store that claims from its index and on one that
// (with max_indexed 1) claims from the table whenever more than one
// delivery is pending: every claim takes the same deliveries in the same
// order, every wake-up time and count is the same. Then a backlog grows past
// the limit and shrinks again, and the store goes back to its index.
TEST(SqliteOutboxTest, IndexAndTableClaimTheSameDeliveries) {
  std::string dir_a = testing::MakeTempDir(), dir_b = testing::MakeTempDir();
  auto indexed = SqliteDeliveryStore::Open(dir_a);
  SqliteDeliveryStore::Options tiny;
  tiny.max_indexed = 1;
  auto table = SqliteDeliveryStore::Open(dir_b, tiny);
  ASSERT_TRUE(indexed.ok()) << indexed.status();
  ASSERT_TRUE(table.ok()) << table.status();
  // Counted from here on as rows change (GetStats does not scan).
  ASSERT_TRUE((*indexed)->CountByStatus()->empty());
  ASSERT_TRUE((*table)->CountByStatus()->empty());
  std::mt19937 rng(7);
  absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  int created = 0;
  std::vector<DeliveryRecord> held;  // claimed and not yet finished
  int fulls = 0, throttles = 0, redelivered = 0;
  for (int step = 0; step < 400; ++step) {
    now += absl::Milliseconds(rng() % 50);
    std::vector<DeliveryRecord> fresh;
    for (int k = rng() % 6; k > 0; --k) {
      DeliveryRecord r;
      r.delivery.set_id(absl::StrCat("dlv_", created));
      r.delivery.set_webhook_id(absl::StrCat("wh_", rng() % 4));
      r.delivery.set_event_id(absl::StrCat("evt_", created++));
      r.delivery.set_status(v1::DELIVERY_STATUS_PENDING);
      r.body = "{}";
      // Many share a due time: ties must go the same way on both paths.
      r.next_attempt = now + absl::Milliseconds(static_cast<int>(rng() % 10) * 10 - 50);
      fresh.push_back(r);
    }
    ASSERT_EQ(*(*indexed)->Create(fresh), *(*table)->Create(fresh));
    ClaimRequest req;
    req.now = now;
    req.limit = 1 + rng() % 8;
    req.owner = "me";
    req.request_id = absl::StrCat("claim_", step);
    req.lease = absl::Milliseconds(200);
    req.max_per_webhook = 3;
    if (rng() % 5 == 0) req.skip_webhooks = {"wh_1"};
    if (rng() % 7 == 0) req.rate_limits["wh_2"] = RateLimitSpec{20, 2};
    absl::StatusOr<Claimed> a = (*indexed)->Claim(req);
    absl::StatusOr<Claimed> b = (*table)->Claim(req);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    std::vector<std::string> ids_a, ids_b;
    for (const DeliveryRecord& r : a->records) ids_a.push_back(r.delivery.id());
    for (const DeliveryRecord& r : b->records) ids_b.push_back(r.delivery.id());
    ASSERT_EQ(ids_a, ids_b) << "step " << step;
    ASSERT_EQ(a->full, b->full) << "step " << step;
    ASSERT_EQ(a->throttled, b->throttled) << "step " << step;
    fulls += !a->full.empty();
    throttles += !a->throttled.empty();
    for (size_t i = 0; i < a->records.size(); ++i) {
      ASSERT_EQ(a->records[i].claim, b->records[i].claim);
      held.push_back(a->records[i]);
    }
    // Finish some: delivered, failed for good, or due again later.
    std::vector<DeliveryRecord> done;
    while (!held.empty() && rng() % 3 != 0) {
      DeliveryRecord r = held.back();
      held.pop_back();
      int outcome = rng() % 3;
      r.delivery.set_status(outcome == 0   ? v1::DELIVERY_STATUS_DELIVERED
                            : outcome == 1 ? v1::DELIVERY_STATUS_FAILED
                                           : v1::DELIVERY_STATUS_PENDING);
      r.next_attempt = now + absl::Milliseconds(rng() % 300);
      done.push_back(r);
    }
    ASSERT_TRUE((*indexed)->UpdateMany(done, "me").ok());
    ASSERT_TRUE((*table)->UpdateMany(done, "me").ok());
    if (!held.empty() && rng() % 4 == 0) {
      std::vector<ClaimRef> back = {{held.back().delivery.id(), held.back().claim}};
      held.pop_back();
      ASSERT_TRUE((*indexed)->Release(back, "me").ok());
      ASSERT_TRUE((*table)->Release(back, "me").ok());
    }
    // A redelivery: a finished (or pending) delivery starts over, due now.
    if (rng() % 6 == 0 && created > 0) {
      DeliveryRecord again;
      again.delivery.set_id(absl::StrCat("dlv_", rng() % created));
      absl::StatusOr<std::vector<DeliveryRecord>> found =
          (*indexed)->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "", 100000);
      for (const DeliveryRecord& r : *found) {
        if (r.delivery.id() == again.delivery.id()) again = r;
      }
      again.delivery.set_status(v1::DELIVERY_STATUS_PENDING);
      again.next_attempt = now;
      ++redelivered;
      ASSERT_TRUE((*indexed)->Update(again).ok());
      ASSERT_TRUE((*table)->Update(again).ok());
    }
    std::vector<std::string> skip;
    if (rng() % 3 == 0) skip = {"wh_0"};
    absl::StatusOr<absl::Time> next_a = (*indexed)->NextDue(skip);
    absl::StatusOr<absl::Time> next_b = (*table)->NextDue(skip);
    ASSERT_TRUE(next_a.ok() && next_b.ok());
    ASSERT_EQ(*next_a, *next_b) << "step " << step;
    ASSERT_EQ(*(*indexed)->CountByStatus(), *(*table)->CountByStatus()) << "step " << step;
  }
  EXPECT_TRUE((*indexed)->indexed());
  EXPECT_FALSE((*table)->indexed());
  EXPECT_GT(fulls, 10) << "the workload never filled an endpoint";
  EXPECT_GT(throttles, 3) << "the workload never hit a rate limit";
  EXPECT_GT(redelivered, 20);
  // The counts kept are those a scan finds.
  auto scanned = SqliteDeliveryStore::Open(dir_a);
  ASSERT_TRUE(scanned.ok()) << scanned.status();
  std::map<int, uint64_t> counts = *(*scanned)->CountByStatus();
  EXPECT_EQ(*(*indexed)->CountByStatus(), counts);
  EXPECT_GT(counts[v1::DELIVERY_STATUS_DELIVERED], 100u);
  EXPECT_GT(counts[v1::DELIVERY_STATUS_FAILED], 100u);
  EXPECT_GT(counts[v1::DELIVERY_STATUS_PENDING], 10u);

  // Past max_indexed the store reads the table; back under half of it (and
  // 5 s later) it indexes again, and a reopened store indexes what is there.
  std::string dir_c = testing::MakeTempDir();
  SqliteDeliveryStore::Options small;
  small.max_indexed = 10;
  auto store = SqliteDeliveryStore::Open(dir_c, small);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<DeliveryRecord> backlog;
  for (int i = 0; i < 11; ++i) {
    DeliveryRecord r;
    r.delivery.set_id(absl::StrCat("dlv_", i));
    r.delivery.set_webhook_id("wh_a");
    r.delivery.set_event_id(absl::StrCat("evt_", i));
    r.delivery.set_status(v1::DELIVERY_STATUS_PENDING);
    r.next_attempt = now;
    backlog.push_back(r);
  }
  ASSERT_TRUE((*store)->Create(backlog).ok());
  EXPECT_FALSE((*store)->indexed());
  ClaimRequest req;
  req.now = now;
  req.limit = 100;
  req.owner = "me";
  req.max_per_webhook = 100;
  absl::StatusOr<Claimed> c = (*store)->Claim(req);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->records.size(), 11u);
  std::vector<DeliveryRecord> delivered(c->records.begin(), c->records.begin() + 7);
  for (DeliveryRecord& r : delivered) r.delivery.set_status(v1::DELIVERY_STATUS_DELIVERED);
  ASSERT_TRUE((*store)->UpdateMany(delivered, "me").ok());
  req.now = now + absl::Seconds(6);
  req.request_id = "again";
  c = (*store)->Claim(req);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*store)->indexed()) << "4 pending is under half of max_indexed";
  EXPECT_EQ(c->records.size(), 0u) << "the other 4 are still leased";
  req.now = now + absl::Seconds(40);
  req.request_id = "after the leases";
  c = (*store)->Claim(req);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->records.size(), 4u);
}

}  // namespace
}  // namespace switchboard::webhooks
