// The WebhookStore and DeliveryStore contracts, held by the embedded store
// (one replica) and by Redis and a Redis Cluster (shared by replicas). "Two
// replicas" are two store objects over the same data: for SQLite the one
// process's store itself.
#include <unistd.h>

#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/webhook_delivery/delivery_store.h"
#include "services/webhook_delivery/redis_webhook_store.h"
#include "services/webhook_delivery/webhook_store.h"
#include "tests/testing/process.h"
#include "tests/testing/store_backends.h"

namespace switchboard::webhooks {
namespace {

using switchboard::testing::Backend;
using switchboard::testing::BackendName;

class WebhookStoreConformance : public switchboard::testing::StoreConformanceTest {
 protected:
  void SetUp() override {
    StoreConformanceTest::SetUp();
    t0_ = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  }

  bool shared() const { return GetParam() != Backend::kSqlite; }

  RedisWebhookStoreOptions Options() const {
    RedisWebhookStoreOptions opts;
    opts.prefix = prefix_;
    return opts;
  }
  std::shared_ptr<redis::RedisClient> Client() {
    return redis::NewRedisClient(RedisConfigOf(), redis_metrics());
  }

  // A replica's view of the registry.
  std::shared_ptr<WebhookStore> Webhooks() {
    if (shared()) return std::make_shared<RedisWebhookStore>(Client(), Options());
    if (sqlite_webhooks_ == nullptr) {
      auto s = SqliteWebhookStore::Open(dir_);
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) sqlite_webhooks_ = *std::move(s);
    }
    return sqlite_webhooks_;
  }

  // A replica's view of the outbox.
  std::shared_ptr<DeliveryStore> Deliveries() {
    if (shared()) return std::make_shared<RedisDeliveryStore>(Client(), Options());
    if (sqlite_deliveries_ == nullptr) {
      auto s = SqliteDeliveryStore::Open(dir_);
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) sqlite_deliveries_ = *std::move(s);
    }
    return sqlite_deliveries_;
  }

  static WebhookRecord Hook(const std::string& id, const std::string& url) {
    WebhookRecord r;
    r.webhook.set_id(id);
    r.webhook.set_url(url);
    r.webhook.add_events("order.*");
    r.webhook.set_secret("whsec_current");
    r.webhook.set_active(true);
    return r;
  }

  DeliveryRecord Delivery(const std::string& id, const std::string& webhook_id,
                          const std::string& event_id, absl::Time due) const {
    DeliveryRecord r;
    r.delivery.set_id(id);
    r.delivery.set_webhook_id(webhook_id);
    r.delivery.set_event_id(event_id);
    r.delivery.set_event_type("order.created");
    r.delivery.set_status(v1::DELIVERY_STATUS_PENDING);
    r.body = absl::StrCat("{\"id\":\"", event_id, "\"}");
    r.next_attempt = due;
    return r;
  }

  ClaimRequest Claim(const std::string& owner, absl::Time now, size_t limit = 100) const {
    ClaimRequest req;
    req.owner = owner;
    req.now = now;
    req.limit = limit;
    req.lease = absl::Seconds(10);
    req.max_per_webhook = 100;
    return req;
  }

  static std::vector<std::string> Ids(const std::vector<DeliveryRecord>& records) {
    std::vector<std::string> out;
    for (const DeliveryRecord& r : records) out.push_back(r.delivery.id());
    return out;
  }
  static std::vector<std::string> Ids(const absl::StatusOr<Claimed>& c) {
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? Ids(c->records) : std::vector<std::string>{"<error>"};
  }

  // The attempt's result as the engine writes it.
  static DeliveryRecord Attempted(DeliveryRecord r, v1::DeliveryStatus status,
                                  absl::Time next = absl::InfinitePast()) {
    r.delivery.add_attempts()->set_http_status(status == v1::DELIVERY_STATUS_DELIVERED ? 204 : 500);
    r.delivery.set_status(status);
    r.next_attempt = next;
    return r;
  }

  absl::Time t0_;
  std::shared_ptr<WebhookStore> sqlite_webhooks_;
  std::shared_ptr<DeliveryStore> sqlite_deliveries_;
};

TEST_P(WebhookStoreConformance, AWebhookRoundTripsWithItsSecretsAndVersion) {
  auto store = Webhooks();
  WebhookRecord r = Hook("wh_1", "https://a.example/hook");
  r.previous_secret = "whsec_previous";
  r.previous_expires = t0_ + absl::Hours(24);
  absl::StatusOr<uint64_t> v = store->Put(r);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 1u);
  auto got = Webhooks()->Get("wh_1");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status();
  EXPECT_EQ((*got)->webhook.url(), "https://a.example/hook");
  EXPECT_EQ((*got)->webhook.secret(), "whsec_current");
  EXPECT_EQ((*got)->previous_secret, "whsec_previous");
  EXPECT_EQ((*got)->previous_expires, r.previous_expires);
  EXPECT_EQ((*got)->version, 1u);
  EXPECT_FALSE(store->Get("wh_none")->has_value());
}

TEST_P(WebhookStoreConformance, AWriteOverAStaleVersionIsRefused) {
  auto a = Webhooks(), b = Webhooks();
  ASSERT_TRUE(a->Put(Hook("wh_1", "https://a.example/1")).ok());
  // Both replicas read version 1; the first write wins, the second is told.
  WebhookRecord from_a = **a->Get("wh_1");
  WebhookRecord from_b = **b->Get("wh_1");
  from_a.webhook.set_url("https://a.example/2");
  from_b.webhook.set_description("b's change");
  ASSERT_EQ(*a->Put(from_a), 2u);
  EXPECT_TRUE(absl::IsAborted(b->Put(from_b).status()));
  EXPECT_EQ((*b->Get("wh_1"))->webhook.url(), "https://a.example/2");
  // A record "new" to a replica that is not new to the store is refused too.
  EXPECT_TRUE(absl::IsAborted(b->Put(Hook("wh_1", "https://b.example/")).status()));
  EXPECT_EQ((*a->Get("wh_1"))->webhook.url(), "https://a.example/2");
}

TEST_P(WebhookStoreConformance, ListAndDeleteAndTheGenerationEveryReplicaSees) {
  auto a = Webhooks(), b = Webhooks();
  absl::StatusOr<uint64_t> g0 = b->Generation();
  ASSERT_TRUE(g0.ok()) << g0.status();
  ASSERT_TRUE(a->Put(Hook("wh_b", "https://b.example/")).ok());
  ASSERT_TRUE(a->Put(Hook("wh_a", "https://a.example/")).ok());
  absl::StatusOr<uint64_t> g1 = b->Generation();
  EXPECT_NE(*g1, *g0);
  auto list = b->List();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].webhook.id(), "wh_a");
  EXPECT_EQ((*list)[1].webhook.id(), "wh_b");
  EXPECT_TRUE(*a->Delete("wh_a"));
  EXPECT_FALSE(*a->Delete("wh_a"));
  EXPECT_NE(*b->Generation(), *g1);
  EXPECT_EQ(b->List()->size(), 1u);
  EXPECT_FALSE(b->Get("wh_a")->has_value());
}

TEST_P(WebhookStoreConformance, CreateIsIdempotentPerWebhookAndEvent) {
  auto store = Deliveries();
  absl::StatusOr<int> n = store->Create(
      {Delivery("dlv_1", "wh_a", "evt_1", t0_), Delivery("dlv_2", "wh_b", "evt_1", t0_)});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  // The same event again (a broker redelivery) creates nothing new.
  EXPECT_EQ(*Deliveries()->Create(
                {Delivery("dlv_3", "wh_a", "evt_1", t0_), Delivery("dlv_4", "wh_a", "evt_2", t0_)}),
            1);
  auto all = store->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "", 10);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 3u);
  EXPECT_EQ(Ids(*store->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_1", 10)).size(), 2u);
  EXPECT_EQ(Ids(*store->List("wh_a", v1::DELIVERY_STATUS_UNSPECIFIED, "", 10)),
            (std::vector<std::string>{"dlv_4", "dlv_1"}));  // newest first
  EXPECT_EQ(Ids(*store->List("wh_a", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_1", 10)),
            std::vector<std::string>{"dlv_1"});
  EXPECT_EQ(store->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "", 2)->size(), 2u);
  auto one = store->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_2", 1);
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].body, "{\"id\":\"evt_2\"}");
  EXPECT_EQ((*one)[0].delivery.event_type(), "order.created");
}

// The intake matches events against its copy of the registry: on a shared
// store the outbox takes them only while no replica has changed the registry
// since that copy was read.
TEST_P(WebhookStoreConformance, ACreateMatchedAgainstAnOldRegistryWritesNothing) {
  auto hooks = Webhooks();
  auto out = Deliveries();
  if (!shared()) {
    // One process changes the embedded registry: there is nothing to check.
    EXPECT_EQ(out->CreateIfRegistryAt({Delivery("dlv_1", "wh_a", "evt_1", t0_)}, 0).status().code(),
              absl::StatusCode::kUnimplemented);
    EXPECT_TRUE(out->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "", 10)->empty());
    return;
  }
  ASSERT_TRUE(hooks->Put(Hook("wh_a", "https://a.example/")).ok());
  absl::StatusOr<uint64_t> g1 = hooks->Generation();
  ASSERT_TRUE(g1.ok()) << g1.status();
  absl::StatusOr<int> n = out->CreateIfRegistryAt({Delivery("dlv_1", "wh_a", "evt_1", t0_)}, *g1);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(*out->CreateIfRegistryAt({}, *g1), 0) << "an empty batch is only checked";
  // Another replica registers a webhook.
  ASSERT_TRUE(Webhooks()->Put(Hook("wh_b", "https://b.example/")).ok());
  EXPECT_TRUE(absl::IsAborted(
      out->CreateIfRegistryAt({Delivery("dlv_2", "wh_a", "evt_2", t0_)}, *g1).status()));
  EXPECT_TRUE(absl::IsAborted(out->CreateIfRegistryAt({}, *g1).status()));
  EXPECT_TRUE(out->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_2", 10)->empty());
  EXPECT_EQ(Ids(*out->Claim(Claim("o1", t0_))), std::vector<std::string>{"dlv_1"})
      << "nothing of the refused batch is due";
  // Matched again against the registry as it is now: written.
  absl::StatusOr<uint64_t> g2 = hooks->Generation();
  n = out->CreateIfRegistryAt(
      {Delivery("dlv_2", "wh_a", "evt_2", t0_), Delivery("dlv_3", "wh_b", "evt_2", t0_)}, *g2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(out->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_2", 10)->size(), 2u);
}

TEST_P(WebhookStoreConformance, AClaimedDeliveryIsNobodyElsesUntilItsLeaseRunsOut) {
  auto a = Deliveries(), b = Deliveries();
  ASSERT_TRUE(a->Create({Delivery("dlv_2", "wh_a", "evt_2", t0_ + absl::Milliseconds(2)),
                         Delivery("dlv_1", "wh_a", "evt_1", t0_ + absl::Milliseconds(1)),
                         Delivery("dlv_later", "wh_a", "evt_3", t0_ + absl::Hours(1))})
                  .ok());
  // Earliest first; not what is due later.
  EXPECT_EQ(Ids(a->Claim(Claim("replica-a", t0_ + absl::Seconds(1)))),
            (std::vector<std::string>{"dlv_1", "dlv_2"}));
  EXPECT_TRUE(Ids(b->Claim(Claim("replica-b", t0_ + absl::Seconds(2)))).empty());
  // replica-a died: 10 s later its leases have run out.
  EXPECT_EQ(Ids(b->Claim(Claim("replica-b", t0_ + absl::Seconds(12)))),
            (std::vector<std::string>{"dlv_1", "dlv_2"}));
}

TEST_P(WebhookStoreConformance, OnlyTheLeaseHolderRecordsTheAttempt) {
  auto a = Deliveries(), b = Deliveries();
  ASSERT_TRUE(
      a->Create({Delivery("dlv_1", "wh_a", "evt_1", t0_), Delivery("dlv_2", "wh_a", "evt_2", t0_)})
          .ok());
  auto claimed = a->Claim(Claim("replica-a", t0_));
  ASSERT_EQ(Ids(claimed).size(), 2u);
  // The leases ran out and replica-b holds dlv_1 now.
  ASSERT_EQ(Ids(b->Claim(Claim("replica-b", t0_ + absl::Seconds(11), 1))),
            std::vector<std::string>{"dlv_1"});
  ASSERT_TRUE(a->UpdateMany({Attempted(claimed->records[0], v1::DELIVERY_STATUS_DELIVERED),
                             Attempted(claimed->records[1], v1::DELIVERY_STATUS_DELIVERED)},
                            "replica-a")
                  .ok());
  auto d1 = b->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_1", 1);
  auto d2 = b->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_2", 1);
  EXPECT_EQ((*d1)[0].delivery.status(), v1::DELIVERY_STATUS_PENDING) << "replica-b holds it";
  EXPECT_EQ((*d2)[0].delivery.status(), v1::DELIVERY_STATUS_DELIVERED);
  EXPECT_EQ((*d2)[0].delivery.attempts_size(), 1);
  // Delivered is not due again, for anyone.
  EXPECT_TRUE(Ids(a->Claim(Claim("replica-a", t0_ + absl::Hours(1)))) ==
              std::vector<std::string>{"dlv_1"});
}

TEST_P(WebhookStoreConformance, AFailedAttemptIsDueAgainAtItsNextAttempt) {
  auto store = Deliveries();
  ASSERT_TRUE(store->Create({Delivery("dlv_1", "wh_a", "evt_1", t0_)}).ok());
  auto claimed = store->Claim(Claim("a", t0_));
  ASSERT_EQ(Ids(claimed).size(), 1u);
  DeliveryRecord retry =
      Attempted(claimed->records[0], v1::DELIVERY_STATUS_PENDING, t0_ + absl::Seconds(5));
  ASSERT_TRUE(store->UpdateMany({retry}, "a").ok());
  EXPECT_EQ(*store->NextDue({}), t0_ + absl::Seconds(5));
  EXPECT_TRUE(Ids(store->Claim(Claim("a", t0_ + absl::Seconds(4)))).empty());
  auto again = store->Claim(Claim("b", t0_ + absl::Seconds(5)));
  ASSERT_EQ(Ids(again), std::vector<std::string>{"dlv_1"});
  EXPECT_EQ(again->records[0].delivery.attempts_size(), 1);
  EXPECT_EQ(again->records[0].body, "{\"id\":\"evt_1\"}");
}

TEST_P(WebhookStoreConformance, ReleaseAndRenew) {
  auto a = Deliveries(), b = Deliveries();
  ASSERT_TRUE(
      a->Create({Delivery("dlv_1", "wh_a", "evt_1", t0_), Delivery("dlv_2", "wh_a", "evt_2", t0_)})
          .ok());
  absl::StatusOr<Claimed> claimed = a->Claim(Claim("a", t0_));
  ASSERT_EQ(Ids(claimed).size(), 2u);
  ClaimRef one{"dlv_1", claimed->records[0].claim};
  EXPECT_EQ(*b->NextDue({}), t0_ + absl::Seconds(10)) << "due when the leases run out";
  // Another replica cannot give back or renew what it does not hold, nor the
  // holder with another claim's token; a renewal never shortens a lease.
  ASSERT_TRUE(b->Release({one}, "b").ok());
  ASSERT_TRUE(a->Release({{"dlv_1", one.second + 1000}}, "a").ok());
  ASSERT_TRUE(b->Renew({"dlv_2"}, "b", t0_ + absl::Hours(1)).ok());
  ASSERT_TRUE(a->Renew({"dlv_2"}, "a", t0_ + absl::Seconds(5)).ok());
  EXPECT_TRUE(Ids(b->Claim(Claim("b", t0_ + absl::Seconds(6)))).empty());
  // The holder gives dlv_1 back and keeps dlv_2 past its first lease.
  ASSERT_TRUE(a->Release({one}, "a").ok());
  ASSERT_TRUE(a->Renew({"dlv_2"}, "a", t0_ + absl::Seconds(60)).ok());
  EXPECT_EQ(*b->NextDue({}), t0_);
  EXPECT_EQ(Ids(b->Claim(Claim("b", t0_ + absl::Seconds(30)))), std::vector<std::string>{"dlv_1"});
  EXPECT_TRUE(Ids(b->Claim(Claim("c", t0_ + absl::Seconds(35)))).empty());
  EXPECT_EQ(Ids(b->Claim(Claim("c", t0_ + absl::Seconds(61)))),
            (std::vector<std::string>{"dlv_1", "dlv_2"}));
}

TEST_P(WebhookStoreConformance, OnlyTheLatestClaimsWriteCounts) {
  auto store = Deliveries();
  ASSERT_TRUE(store->Create({Delivery("dlv_1", "wh_a", "evt_1", t0_)}).ok());
  auto first = store->Claim(Claim("a", t0_));
  ASSERT_EQ(Ids(first).size(), 1u);
  // The lease ran out (Redis slow, say) and the same replica claimed it again.
  auto second = store->Claim(Claim("a", t0_ + absl::Seconds(11)));
  ASSERT_EQ(Ids(second).size(), 1u);
  EXPECT_NE(first->records[0].claim, second->records[0].claim);
  ASSERT_TRUE(
      store->UpdateMany({Attempted(first->records[0], v1::DELIVERY_STATUS_FAILED)}, "a").ok());
  EXPECT_EQ((*store->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_1", 1))[0].delivery.status(),
            v1::DELIVERY_STATUS_PENDING)
      << "the first claim's answer came too late";
  ASSERT_TRUE(
      store->UpdateMany({Attempted(second->records[0], v1::DELIVERY_STATUS_DELIVERED)}, "a").ok());
  EXPECT_EQ((*store->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_1", 1))[0].delivery.status(),
            v1::DELIVERY_STATUS_DELIVERED);
}

TEST_P(WebhookStoreConformance, AClaimSentAgainAnswersTheSameDeliveries) {
  auto store = Deliveries();
  ASSERT_TRUE(store
                  ->Create({Delivery("dlv_1", "wh_a", "evt_1", t0_),
                            Delivery("dlv_2", "wh_a", "evt_2", t0_),
                            Delivery("dlv_3", "wh_a", "evt_3", t0_)})
                  .ok());
  ClaimRequest req = Claim("a", t0_, 2);
  req.request_id = "claim-1";
  auto first = store->Claim(req);
  auto again = store->Claim(req);  // its reply was lost; the client sent it again
  EXPECT_EQ(Ids(first), (std::vector<std::string>{"dlv_1", "dlv_2"}));
  EXPECT_EQ(Ids(again), Ids(first));
  EXPECT_EQ(again->records[1].claim, first->records[1].claim);
  req.request_id = "claim-2";
  EXPECT_EQ(Ids(store->Claim(req)), std::vector<std::string>{"dlv_3"});
}

TEST_P(WebhookStoreConformance, ALongBacklogOfOneEndpointHidesNoOther) {
  auto a = Deliveries(), b = Deliveries();
  std::vector<DeliveryRecord> records;
  for (int i = 0; i < 2500; ++i) {
    records.push_back(Delivery(absl::StrCat("dlv_s", 10000 + i), "wh_slow",
                               absl::StrCat("evt_s", i), t0_ + absl::Microseconds(i)));
  }
  records.push_back(Delivery("dlv_f", "wh_fast", "evt_f", t0_ + absl::Milliseconds(100)));
  ASSERT_TRUE(a->Create(records).ok());
  ClaimRequest req = Claim("a", t0_ + absl::Seconds(1), 10);
  req.max_per_webhook = 2;
  EXPECT_EQ(Ids(a->Claim(req)), (std::vector<std::string>{"dlv_s10000", "dlv_s10001", "dlv_f"}));
  // Replica b: wh_slow is full (a holds 2), and says so; nothing else is due.
  ASSERT_TRUE(
      b->Create({Delivery("dlv_g", "wh_other", "evt_g", t0_ + absl::Milliseconds(200))}).ok());
  req.owner = "b";
  absl::StatusOr<Claimed> c = b->Claim(req);
  EXPECT_EQ(Ids(c), std::vector<std::string>{"dlv_g"});
  EXPECT_EQ(c->full, std::set<std::string>{"wh_slow"});
  // A rate-limited endpoint's backlog hides nothing either.
  ASSERT_TRUE(
      b->Create({Delivery("dlv_h", "wh_other", "evt_h", t0_ + absl::Milliseconds(300))}).ok());
  req.max_per_webhook = 100;
  req.rate_limits["wh_slow"] = RateLimitSpec{1, 1};
  req.now = t0_ + absl::Seconds(20);  // the leases ran out
  c = b->Claim(req);
  ASSERT_TRUE(c.ok()) << c.status();
  std::map<std::string, int> by_endpoint;
  for (const DeliveryRecord& r : c->records) by_endpoint[r.delivery.webhook_id()]++;
  EXPECT_EQ(by_endpoint,
            (std::map<std::string, int>{{"wh_slow", 1}, {"wh_fast", 1}, {"wh_other", 2}}))
      << "one token of wh_slow, and everything else that is due";
  EXPECT_EQ(c->throttled.count("wh_slow"), 1u);
  EXPECT_EQ(*b->NextDue({"wh_slow"}), t0_ + absl::Seconds(20) + absl::Seconds(10))
      << "only the leases of what b holds";
}

TEST_P(WebhookStoreConformance, ListingByStatusFindsOldDeliveries) {
  auto store = Deliveries();
  std::vector<DeliveryRecord> records;
  for (int i = 0; i < 5100; ++i) {
    records.push_back(Delivery(absl::StrCat("dlv_", 10000 + i), "wh_a", absl::StrCat("evt_", i),
                               t0_ + absl::Hours(1)));
  }
  ASSERT_TRUE(store->Create(records).ok());
  DeliveryRecord oldest = records[0];
  oldest.delivery.set_status(v1::DELIVERY_STATUS_FAILED);
  ASSERT_TRUE(store->Update(oldest).ok());
  EXPECT_EQ(Ids(*store->List("", v1::DELIVERY_STATUS_FAILED, "", 10)),
            std::vector<std::string>{"dlv_10000"});
  EXPECT_EQ(Ids(*store->List("wh_a", v1::DELIVERY_STATUS_FAILED, "", 10)),
            std::vector<std::string>{"dlv_10000"});
  EXPECT_EQ(store->List("wh_a", v1::DELIVERY_STATUS_PENDING, "", 2000)->size(), 2000u);
}

TEST_P(WebhookStoreConformance, ARedeliveryReplacesWhatEverHoldsIt) {
  auto a = Deliveries(), b = Deliveries();
  ASSERT_TRUE(a->Create({Delivery("dlv_1", "wh_a", "evt_1", t0_)}).ok());
  auto claimed = a->Claim(Claim("a", t0_));
  ASSERT_EQ(Ids(claimed).size(), 1u);
  DeliveryRecord fresh = claimed->records[0];
  fresh.delivery.clear_attempts();
  fresh.next_attempt = t0_ + absl::Seconds(1);
  ASSERT_TRUE(b->Update(fresh).ok());
  // The old holder's answer is dropped; the redelivery is due for anyone.
  ASSERT_TRUE(
      a->UpdateMany({Attempted(claimed->records[0], v1::DELIVERY_STATUS_FAILED)}, "a").ok());
  auto again = b->Claim(Claim("b", t0_ + absl::Seconds(1)));
  ASSERT_EQ(Ids(again), std::vector<std::string>{"dlv_1"});
  EXPECT_EQ(again->records[0].delivery.status(), v1::DELIVERY_STATUS_PENDING);
  EXPECT_EQ(again->records[0].delivery.attempts_size(), 0);
}

TEST_P(WebhookStoreConformance, AnEndpointsConcurrencyLimitHoldsOverReplicas) {
  auto a = Deliveries(), b = Deliveries();
  std::vector<DeliveryRecord> records;
  // A backlog of wh_slow due first, then one of wh_fast.
  for (int i = 0; i < 300; ++i) {
    records.push_back(Delivery(absl::StrCat("dlv_s", 1000 + i), "wh_slow", absl::StrCat("evt_s", i),
                               t0_ + absl::Microseconds(i)));
  }
  records.push_back(Delivery("dlv_f", "wh_fast", "evt_f", t0_ + absl::Milliseconds(1)));
  ASSERT_TRUE(a->Create(records).ok());
  ClaimRequest req = Claim("a", t0_ + absl::Seconds(1), 10);
  req.max_per_webhook = 2;
  EXPECT_EQ(Ids(a->Claim(req)), (std::vector<std::string>{"dlv_s1000", "dlv_s1001", "dlv_f"}));
  req.owner = "b";
  EXPECT_TRUE(Ids(b->Claim(req)).empty()) << "wh_slow has 2 under lease already";
  // Skipped endpoints are left out of the claim.
  auto c = Deliveries();
  ASSERT_TRUE(c->Create({Delivery("dlv_g", "wh_other", "evt_g", t0_)}).ok());
  req.skip_webhooks = {"wh_other"};
  EXPECT_TRUE(Ids(c->Claim(req)).empty());
  req.skip_webhooks.clear();
  EXPECT_EQ(Ids(c->Claim(req)), std::vector<std::string>{"dlv_g"});
}

TEST_P(WebhookStoreConformance, ARateLimitLetsDeliveriesWaitOverReplicas) {
  auto a = Deliveries(), b = Deliveries();
  std::vector<DeliveryRecord> records;
  for (int i = 0; i < 5; ++i) {
    records.push_back(Delivery(absl::StrCat("dlv_", i), "wh_a", absl::StrCat("evt_", i), t0_));
  }
  ASSERT_TRUE(a->Create(records).ok());
  ClaimRequest req = Claim("a", t0_);
  req.rate_limits["wh_a"] = RateLimitSpec{1.0, 2.0};  // 1/s, bursts of 2
  absl::StatusOr<Claimed> first = a->Claim(req);
  EXPECT_EQ(Ids(first).size(), 2u) << "the burst";
  ASSERT_EQ(first->throttled.count("wh_a"), 1u);
  EXPECT_EQ(first->throttled.at("wh_a"), t0_ + absl::Seconds(1));
  req.owner = "b";
  req.now = t0_ + absl::Milliseconds(500);
  EXPECT_TRUE(Ids(b->Claim(req)).empty()) << "the bucket is shared";
  req.now = t0_ + absl::Seconds(1);
  EXPECT_EQ(Ids(b->Claim(req)).size(), 1u);
  EXPECT_TRUE(Ids(a->Claim(req)).empty());
  req.now = t0_ + absl::Seconds(3);
  EXPECT_EQ(Ids(a->Claim(req)).size(), 2u) << "two seconds, two tokens";
  // What waits is still pending, not failed.
  EXPECT_EQ((*a->CountByStatus())[v1::DELIVERY_STATUS_PENDING], 5u);
}

TEST_P(WebhookStoreConformance, NextDueSkipsEndpointsAndCountsPending) {
  auto store = Deliveries();
  EXPECT_EQ(*store->NextDue({}), absl::InfiniteFuture());
  ASSERT_TRUE(store
                  ->Create({Delivery("dlv_a", "wh_a", "evt_1", t0_ + absl::Seconds(1)),
                            Delivery("dlv_b", "wh_b", "evt_2", t0_ + absl::Seconds(2)),
                            Delivery("dlv_c", "wh_c", "evt_3", t0_ + absl::Seconds(30))})
                  .ok());
  EXPECT_EQ(*store->NextDue({}), t0_ + absl::Seconds(1));
  EXPECT_EQ(*store->NextDue({"wh_a"}), t0_ + absl::Seconds(2));
  EXPECT_EQ(*store->NextDue({"wh_a", "wh_b", "wh_c"}), absl::InfiniteFuture());
  auto pending = store->CountPending(t0_ + absl::Seconds(5));
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(*pending, std::make_pair(uint64_t{2}, uint64_t{1}));
  auto claimed = store->Claim(Claim("a", t0_ + absl::Seconds(5), 1));
  ASSERT_EQ(Ids(claimed), std::vector<std::string>{"dlv_a"});
  // Under lease: scheduled (for its lease's end), not due.
  EXPECT_EQ(*store->CountPending(t0_ + absl::Seconds(5)), std::make_pair(uint64_t{1}, uint64_t{2}));
  ASSERT_TRUE(
      store->UpdateMany({Attempted(claimed->records[0], v1::DELIVERY_STATUS_FAILED)}, "a").ok());
  // Finished: no longer pending at all.
  EXPECT_EQ(*store->CountPending(t0_ + absl::Seconds(5)), std::make_pair(uint64_t{1}, uint64_t{1}));
  EXPECT_EQ(*store->CountPending(t0_ + absl::Seconds(60)),
            std::make_pair(uint64_t{2}, uint64_t{0}));
  auto counts = store->CountByStatus();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ((*counts)[v1::DELIVERY_STATUS_PENDING], 2u);
  EXPECT_EQ((*counts)[v1::DELIVERY_STATUS_FAILED], 1u);
  EXPECT_EQ(Ids(*store->List("", v1::DELIVERY_STATUS_FAILED, "", 10)),
            std::vector<std::string>{"dlv_a"});
}

// --redis_min_replicas: a write is acknowledged only once that many replicas
// have it; these servers have none, so the write is refused as UNAVAILABLE
// (the caller nacks its event, and a later attempt finds the replicas).
TEST_P(WebhookStoreConformance, AWriteWaitsForTheReplicasAskedFor) {
  if (!shared()) GTEST_SKIP() << "the embedded store has no replicas";
  RedisWebhookStoreOptions opts = Options();
  opts.min_replicas = 1;
  opts.timeout = absl::Seconds(2);
  RedisDeliveryStore deliveries(Client(), opts);
  absl::StatusOr<int> n = deliveries.Create({Delivery("dlv_1", "wh_a", "evt_1", t0_)});
  EXPECT_TRUE(absl::IsUnavailable(n.status())) << n.status();
  EXPECT_NE(n.status().message().find("replicas"), std::string::npos) << n.status();
  RedisWebhookStore webhooks(Client(), opts);
  EXPECT_TRUE(absl::IsUnavailable(webhooks.Put(Hook("wh_1", "https://a.example/")).status()));
  opts.min_replicas = 0;
  EXPECT_TRUE(
      RedisDeliveryStore(Client(), opts).Create({Delivery("dlv_2", "wh_a", "evt_2", t0_)}).ok());
}

INSTANTIATE_TEST_SUITE_P(Stores, WebhookStoreConformance,
                         ::testing::Values(Backend::kSqlite, Backend::kRedis,
                                           Backend::kRedisCluster),
                         BackendName);

}  // namespace
}  // namespace switchboard::webhooks
