// Two real webhook-delivery replicas sharing one Redis (and the broker on it,
// standalone or Cluster), a real receiver that verifies signatures: a
// registration made on one replica is used by the other within a second; the
// outbox, attempt log and stats answer the same from either; a replica killed
// mid-delivery loses nothing (its leases run out and the other delivers, a
// duplicate with the same webhook-id); an endpoint's rate limit holds over
// both replicas together.
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"
#include "tests/testing/flag_checks.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/store_backends.h"

namespace switchboard {
namespace {

using google::protobuf::util::TimeUtil;
using testing::Backend;
using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;
using webhooks::v1::WebhookService;

constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

class WebhookRedisIT : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kRedis) {
      auto r = testing::RedisServer::Start();
      ASSERT_TRUE(r.ok()) << r.status();
      redis_ = *std::move(r);
      url_ = redis_->url();
    } else {
      auto c = testing::RedisCluster::Start(3, 0);
      ASSERT_TRUE(c.ok()) << c.status();
      cluster_ = *std::move(c);
      url_ = cluster_->url();
    }
    auto b = ServiceProcess::Start(BROKER_BIN, {"--store=" + url_});
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    broker_stub_ = broker::v1::EventBroker::NewStub(
        grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  void StartReceiver(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {std::string("--secret=") + kSecret};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = ServiceProcess::Start(RECEIVER_BIN, args, absl::Seconds(30), /*grpc=*/false);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
  }

  void StartReplica(int i, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--broker=" + broker_->grpc_addr(),
                                     "--store=" + url_,
                                     "--allow_private_targets",
                                     "--delivery_lease=2s",
                                     "--redis_timeout=500ms",
                                     absl::StrCat("--data_dir=", dir_, "/unused-", i)};
    args.insert(args.end(), extra.begin(), extra.end());
    auto w = ServiceProcess::Start(WEBHOOK_BIN, args);
    ASSERT_TRUE(w.ok()) << w.status();
    replicas_[i] = *std::move(w);
    ASSERT_TRUE(WaitUntil(
        [&] { return HttpRequest(replicas_[i]->http_addr(), "GET", "/readyz").status == 200; },
        absl::Seconds(20)))
        << replicas_[i]->Log();
    stubs_[i] = WebhookService::NewStub(
        grpc::CreateChannel(replicas_[i]->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  webhooks::v1::Webhook Register(int replica, const webhooks::v1::RateLimit* rate = nullptr) {
    webhooks::v1::RegisterWebhookRequest req;
    req.set_url(absl::StrCat("http://", receiver_->http_addr(), "/webhooks"));
    req.add_events("order.*");
    req.set_secret(kSecret);
    *req.mutable_retry_delay() = TimeUtil::MillisecondsToDuration(200);
    if (rate != nullptr) *req.mutable_rate_limit() = *rate;
    webhooks::v1::Webhook out;
    grpc::ClientContext ctx;
    grpc::Status s = stubs_[replica]->RegisterWebhook(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  std::vector<webhooks::v1::Webhook> ListWebhooks(int replica) {
    webhooks::v1::ListWebhooksResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stubs_[replica]->ListWebhooks(&ctx, {}, &resp).ok());
    return {resp.webhooks().begin(), resp.webhooks().end()};
  }

  std::vector<webhooks::v1::WebhookDelivery> Deliveries(int replica) {
    webhooks::v1::ListDeliveriesRequest req;
    req.set_limit(1000);
    webhooks::v1::ListDeliveriesResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stubs_[replica]->ListDeliveries(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.deliveries().begin(), resp.deliveries().end()};
  }

  int CountDelivered(int replica) {
    int n = 0;
    for (const auto& d : Deliveries(replica)) {
      n += d.status() == webhooks::v1::DELIVERY_STATUS_DELIVERED;
    }
    return n;
  }

  void PublishOrders(int n, const std::string& prefix) {
    broker::v1::PublishBatchRequest batch;
    for (int i = 0; i < n; ++i) {
      auto* ev = batch.add_events();
      ev->set_type("order.created");
      ev->set_source("checkout-service");
      ev->set_correlation_id(absl::StrCat(prefix, "-", i));
    }
    broker::v1::PublishBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(broker_stub_->PublishBatch(&ctx, batch, &resp).ok());
  }

  // Event ids the receiver accepted (each verified), and its duplicate count.
  std::set<std::string> ReceivedIds(uint64_t* duplicates = nullptr) {
    auto r = HttpRequest(receiver_->http_addr(), "GET", "/received");
    google::protobuf::Struct s;
    std::set<std::string> out;
    if (!google::protobuf::util::JsonStringToMessage(r.body, &s).ok()) return out;
    if (duplicates) *duplicates = s.fields().at("duplicates").number_value();
    for (const auto& v : s.fields().at("events").list_value().values()) {
      out.insert(v.struct_value().fields().at("id").string_value());
    }
    return out;
  }

  // A metric's value on a replica's /metrics (the first series of that name).
  double Metric(int replica, const std::string& name) {
    auto r = HttpRequest(replicas_[replica]->http_addr(), "GET", "/metrics");
    for (absl::string_view line : absl::StrSplit(r.body, '\n')) {
      if (!absl::StartsWith(line, name + " ") && !absl::StartsWith(line, name + "{")) continue;
      double v = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) return v;
    }
    return -1;
  }

  std::string dir_ = testing::MakeTempDir();
  std::string url_;
  std::unique_ptr<testing::RedisServer> redis_;
  std::unique_ptr<testing::RedisCluster> cluster_;
  std::unique_ptr<ServiceProcess> broker_, receiver_, replicas_[2];
  std::unique_ptr<broker::v1::EventBroker::Stub> broker_stub_;
  std::unique_ptr<WebhookService::Stub> stubs_[2];
};

TEST_P(WebhookRedisIT, EitherReplicaAnswersForTheRegistryAndTheOutbox) {
  StartReceiver();
  StartReplica(0);
  StartReplica(1);
  webhooks::v1::Webhook hook = Register(0);
  ASSERT_FALSE(hook.id().empty());
  ASSERT_TRUE(WaitUntil([&] { return ListWebhooks(1).size() == 1; }, absl::Seconds(1)))
      << "replica 1 does not know replica 0's registration after 1 s";
  // A change made on replica 1 reaches replica 0 (disabling stops deliveries).
  webhooks::v1::UpdateWebhookRequest update;
  update.set_id(hook.id());
  update.set_description("changed on replica 1");
  webhooks::v1::Webhook updated;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs_[1]->UpdateWebhook(&ctx, update, &updated).ok());
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto list = ListWebhooks(0);
        return list.size() == 1 && list[0].description() == "changed on replica 1";
      },
      absl::Seconds(1)));
  constexpr int kN = 40;
  PublishOrders(kN, "shared");
  uint64_t duplicates = 0;
  ASSERT_TRUE(WaitUntil([&] { return ReceivedIds(&duplicates).size() == kN; }, absl::Seconds(30)))
      << ReceivedIds().size() << " of " << kN;
  EXPECT_EQ(duplicates, 0u) << "with no replica lost, each delivery is claimed and sent once";
  // Both replicas list every delivery, delivered once each, and count them.
  ASSERT_TRUE(WaitUntil([&] { return CountDelivered(0) == kN && CountDelivered(1) == kN; },
                        absl::Seconds(10)));
  for (int i = 0; i < 2; ++i) {
    webhooks::v1::GetStatsResponse stats;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs_[i]->GetStats(&ctx, {}, &stats).ok());
    EXPECT_EQ(stats.delivered_webhooks(), static_cast<uint64_t>(kN)) << "replica " << i;
    EXPECT_EQ(stats.registered_webhooks(), 1u);
  }
  // Unregistered on replica 0: replica 1 stops listing it within a second.
  webhooks::v1::UnregisterWebhookRequest unregister;
  unregister.set_id(hook.id());
  webhooks::v1::UnregisterWebhookResponse unregistered;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stubs_[0]->UnregisterWebhook(&ctx, unregister, &unregistered).ok());
  EXPECT_TRUE(WaitUntil([&] { return ListWebhooks(1).empty(); }, absl::Seconds(1)));
}

// A webhook registered on replica 0 that replica 1 has not re-read (it polls
// the registry hourly here): replica 1 matches the events it takes against
// it too, since its outbox writes only against the registry as it is now.
TEST_P(WebhookRedisIT, AReplicaMatchesEventsAgainstAWebhookRegisteredOnAnotherAMomentAgo) {
  StartReceiver();
  StartReplica(0);
  webhooks::v1::Webhook first = Register(0);
  StartReplica(1, {"--registry_poll=1h"});  // knows `first` from its start
  webhooks::v1::Webhook second = Register(0);
  ASSERT_FALSE(second.id().empty());
  replicas_[0].reset();  // replica 1 takes every event from here on
  constexpr int kN = 20;
  PublishOrders(kN, "after-register");
  auto count_for = [&](const std::string& webhook_id) {
    int n = 0;
    for (const auto& d : Deliveries(1)) n += d.webhook_id() == webhook_id;
    return n;
  };
  ASSERT_TRUE(WaitUntil([&] { return count_for(first.id()) == kN; }, absl::Seconds(10)))
      << count_for(first.id()) << " of " << kN << "\n"
      << replicas_[1]->Log();
  EXPECT_EQ(count_for(second.id()), kN)
      << "events recorded for the webhook replica 1 knew, not for the one registered on replica 0";
}

TEST_P(WebhookRedisIT, AReplicaKilledMidDeliveryLosesNothing) {
  // A slow endpoint keeps deliveries in flight long enough to kill one.
  StartReceiver({"--respond_after=1s"});
  StartReplica(0, {"--max_in_flight_per_webhook=3"});
  StartReplica(1, {"--max_in_flight_per_webhook=3"});
  Register(0);
  ASSERT_TRUE(WaitUntil([&] { return ListWebhooks(1).size() == 1; }, absl::Seconds(1)));
  constexpr int kN = 20;
  PublishOrders(kN, "kill");
  // Every event recorded in the shared outbox (and so acked); then the
  // replica that is in the middle of a delivery is killed.
  ASSERT_TRUE(WaitUntil([&] { return Deliveries(1).size() == kN; }, absl::Seconds(20)));
  // In flight on three polls in a row (200 ms): its request is at the
  // receiver, which holds each for a second.
  int victim = -1, seen[2] = {0, 0};
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (int i = 0; i < 2; ++i) {
          seen[i] = Metric(i, "switchboard_webhooks_in_flight") >= 1 ? seen[i] + 1 : 0;
          if (seen[i] >= 3) victim = i;
        }
        return victim >= 0;
      },
      absl::Seconds(20), absl::Milliseconds(100)));
  const int survivor = 1 - victim;
  replicas_[victim]->Kill9();
  uint64_t duplicates = 0;
  ASSERT_TRUE(WaitUntil([&] { return ReceivedIds(&duplicates).size() == kN; }, absl::Seconds(60)))
      << ReceivedIds().size() << " of " << kN;
  ASSERT_TRUE(WaitUntil([&] { return CountDelivered(survivor) == kN; }, absl::Seconds(20)))
      << CountDelivered(survivor) << " of " << kN << " delivered in the outbox";
  // The killed replica's requests in flight reached the (slow) receiver
  // after all, and the survivor sent them again once the leases ran out: the
  // receiver saw them twice, with the same webhook-id, and counts them as
  // duplicates.
  ASSERT_TRUE(WaitUntil(
      [&] {
        ReceivedIds(&duplicates);
        return duplicates >= 1;
      },
      absl::Seconds(10)))
      << "the survivor took over nothing the killed replica held";
  // A restarted replica joins in, and nothing is left due.
  StartReplica(victim);
  EXPECT_EQ(CountDelivered(victim), kN);
}

TEST_P(WebhookRedisIT, ARateLimitHoldsOverBothReplicasAndDeliveriesWait) {
  StartReceiver();
  StartReplica(0);
  StartReplica(1);
  webhooks::v1::RateLimit rate;
  rate.set_per_second(4);
  rate.set_burst(1);
  webhooks::v1::Webhook hook = Register(0, &rate);
  EXPECT_EQ(hook.rate_limit().per_second(), 4);
  ASSERT_TRUE(WaitUntil([&] { return ListWebhooks(1).size() == 1; }, absl::Seconds(1)));
  constexpr int kN = 16;
  PublishOrders(kN, "rate");
  ASSERT_TRUE(WaitUntil([&] { return !ReceivedIds().empty(); }, absl::Seconds(20)));
  absl::Time first = absl::Now();
  ASSERT_TRUE(WaitUntil([&] { return ReceivedIds().size() == kN; }, absl::Seconds(30)));
  // 15 more at 4/s take 3.75 s over both replicas together (each replica
  // on its own bucket would take half that).
  EXPECT_GE(absl::Now() - first, absl::Seconds(3));
  // Waiting is not failing: one attempt each, all delivered.
  ASSERT_TRUE(WaitUntil([&] { return CountDelivered(1) == kN; }, absl::Seconds(10)));
  for (const auto& d : Deliveries(1)) EXPECT_EQ(d.attempts_size(), 1) << d.id();
  EXPECT_GT(Metric(0, "switchboard_webhooks_rate_limited_total") +
                Metric(1, "switchboard_webhooks_rate_limited_total"),
            0);
}

TEST(WebhookRedisConfigTest, BadStorageFlagsExitTwoNamingTheFlag) {
  testing::RedisOptions opts;
  opts.password = "right-password";
  auto redis = testing::RedisServer::Start(opts);
  ASSERT_TRUE(redis.ok()) << redis.status();
  std::string addr = (*redis)->addr();
  testing::ExpectEachExitsTwoNamingTheFlag(
      WEBHOOK_BIN,
      {"--grpc_addr=127.0.0.1:0", "--http_addr=127.0.0.1:0", "--broker=127.0.0.1:1",
       "--data_dir=" + testing::MakeTempDir()},
      {
          {{"--store=mongodb://u:not-it@" + addr}, "store: 'mongodb://'"},
          {{"--store=redis://" + addr, "--redis_prefix=bad{prefix}"}, "redis_prefix"},
          {{"--store=redis://:not-it@" + addr}, "authentication failed"},
          {{"--store=redis://" + addr}, "authentication"},
          {{"--store=redis://:right-password@" + addr, "--delivery_lease=10s"},
           "delivery_lease: 10s is shorter than 3 x redis_timeout"},
          {{"--delivery_lease=0s"}, "delivery_lease"},
          {{"--delivery_retention=1s"}, "delivery_retention"},
          {{"--ack_deadline=0s"}, "ack_deadline"},
          {{"--registry_poll=1ms"}, "registry_poll"},
      },
      "not-it");
}

INSTANTIATE_TEST_SUITE_P(Stores, WebhookRedisIT,
                         ::testing::Values(Backend::kRedis, Backend::kRedisCluster),
                         testing::BackendName);

}  // namespace
}  // namespace switchboard
