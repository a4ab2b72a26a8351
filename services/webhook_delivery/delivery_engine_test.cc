// The delivery engine with the real curl sender against a real local HTTP
// receiver: retries, Retry-After, 410, timeouts, signatures, idempotence.
#include "services/webhook_delivery/delivery_engine.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "libs/common/admin_http.h"
#include "services/webhook_delivery/signing.h"

namespace switchboard::webhooks {
namespace {

using google::protobuf::util::TimeUtil;

struct Received {
  std::map<std::string, std::string> headers;
  std::string body;
  absl::Time at;
};

class DeliveryEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dlv-test-" + std::to_string(getpid()) + "-" + std::to_string(rand()));
    webhooks_ = *SqliteWebhookStore::Open(dir_);
    deliveries_ = *SqliteDeliveryStore::Open(dir_);
    RegistryConfig rc;
    rc.allow_private_targets = true;
    registry_ = std::make_unique<WebhookRegistry>(rc, webhooks_.get(), RealClock::Get());
    EngineConfig ec;
    ec.allow_private_targets = true;
    engine_ = std::make_unique<DeliveryEngine>(ec, registry_.get(), deliveries_.get(), &sender_,
                                               RealClock::Get());
    receiver_ = std::make_unique<AdminHttpServer>(std::make_shared<prometheus::Registry>());
    receiver_->Route("POST", "/hook", [this](const HttpRequest& r) {
      absl::MutexLock lock(&mu_);
      received_.push_back({r.headers, r.body, absl::Now()});
      HttpResponse resp{200, "text/plain", "ok"};
      if (!script_.empty()) {
        resp = script_.front();
        script_.pop_front();
      }
      return resp;
    });
    receiver_->Route("POST", "/hang", [this](const HttpRequest&) {
      release_.WaitForNotificationWithTimeout(absl::Seconds(20));
      return HttpResponse{200, "text/plain", ""};
    });
    port_ = *receiver_->Start("127.0.0.1:0");
    engine_->Start();
  }
  void TearDown() override {
    if (!release_.HasBeenNotified()) release_.Notify();
    engine_.reset();
    receiver_.reset();
    std::filesystem::remove_all(dir_);
  }

  v1::Webhook Register(const std::string& path, uint32_t retries,
                       absl::Duration timeout = absl::Seconds(5)) {
    v1::RegisterWebhookRequest r;
    r.set_url(absl::StrCat("http://127.0.0.1:", port_, path));
    r.add_events("order.*");
    r.set_retry_attempts(retries);
    *r.mutable_retry_delay() = TimeUtil::MillisecondsToDuration(100);
    *r.mutable_timeout() = TimeUtil::MillisecondsToDuration(absl::ToInt64Milliseconds(timeout));
    auto w = registry_->Register(r);
    EXPECT_TRUE(w.ok()) << w.status();
    return *w;
  }
  events::v1::Event Event(const std::string& id) {
    events::v1::Event ev;
    ev.set_id(id);
    ev.set_type("order.created");
    *ev.mutable_time() = TimeUtil::SecondsToTimestamp(1700000000);
    (*ev.mutable_data()->mutable_fields())["orderId"].set_string_value("ord_1");
    return ev;
  }
  std::optional<v1::WebhookDelivery> WaitForStatus(const std::string& event_id,
                                                   v1::DeliveryStatus status) {
    std::optional<v1::WebhookDelivery> out;
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      auto list = deliveries_->List("", v1::DELIVERY_STATUS_UNSPECIFIED, event_id, 10);
      if (list.ok() && !list->empty() && (*list)[0].delivery.status() == status) {
        return (*list)[0].delivery;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return out;
  }
  size_t ReceivedCount() {
    absl::MutexLock lock(&mu_);
    return received_.size();
  }

  std::filesystem::path dir_;
  std::unique_ptr<SqliteWebhookStore> webhooks_;
  std::unique_ptr<SqliteDeliveryStore> deliveries_;
  std::unique_ptr<WebhookRegistry> registry_;
  CurlMultiSender sender_;
  std::unique_ptr<DeliveryEngine> engine_;
  std::unique_ptr<AdminHttpServer> receiver_;
  int port_ = 0;
  absl::Mutex mu_;
  std::vector<Received> received_;
  std::deque<HttpResponse> script_;
  absl::Notification release_;
};

TEST_F(DeliveryEngineTest, ServerErrorsTwiceThenDeliveredOnAttempt3WithValidSignatures) {
  {
    absl::MutexLock lock(&mu_);
    script_ = {HttpResponse{500, "text/plain", "boom"}, HttpResponse{500, "text/plain", "boom"}};
  }
  v1::Webhook w = Register("/hook", 5);
  ASSERT_EQ(*engine_->Record(Event("evt_A")), 1);
  auto d = WaitForStatus("evt_A", v1::DELIVERY_STATUS_DELIVERED);
  ASSERT_TRUE(d.has_value());
  ASSERT_EQ(d->attempts_size(), 3);
  EXPECT_EQ(d->attempts(0).http_status(), 500);
  EXPECT_EQ(d->attempts(0).response_body(), "boom");
  EXPECT_EQ(d->attempts(2).http_status(), 200);
  absl::MutexLock lock(&mu_);
  ASSERT_EQ(received_.size(), 3u);
  for (const Received& r : received_) {
    EXPECT_EQ(r.headers.at("webhook-id"), "evt_A") << "every attempt carries the same id";
    EXPECT_EQ(r.headers.at("x-webhook-event"), "order.created");
    EXPECT_EQ(r.headers.at("x-webhook-id"), w.id());
    EXPECT_EQ(r.headers.at("x-webhook-signature"), r.headers.at("webhook-signature"));
    EXPECT_TRUE(Verify(w.secret(), r.headers.at("webhook-id"), r.headers.at("webhook-timestamp"),
                       r.headers.at("webhook-signature"), r.body, absl::Now())
                    .ok());
    EXPECT_EQ(r.body, R"({"id":"evt_A","event":"order.created","created":"2023-11-14T22:13:20Z",)"
                      R"("data":{"orderId":"ord_1"}})");
  }
  EXPECT_GE(received_[1].at - received_[0].at, absl::Milliseconds(80)) << "backoff";
}

TEST_F(DeliveryEngineTest, RetryAfterIsHonoured) {
  {
    absl::MutexLock lock(&mu_);
    HttpResponse busy{429, "text/plain", "slow down"};
    busy.headers.push_back({"Retry-After", "2"});
    script_ = {busy};
  }
  Register("/hook", 3);
  ASSERT_EQ(*engine_->Record(Event("evt_R")), 1);
  ASSERT_TRUE(WaitForStatus("evt_R", v1::DELIVERY_STATUS_DELIVERED).has_value());
  absl::MutexLock lock(&mu_);
  ASSERT_EQ(received_.size(), 2u);
  EXPECT_GE(received_[1].at - received_[0].at, absl::Milliseconds(1950))
      << "not before Retry-After";
}

TEST_F(DeliveryEngineTest, GoneDisablesTheEndpoint) {
  {
    absl::MutexLock lock(&mu_);
    script_ = {HttpResponse{410, "text/plain", "gone"}};
  }
  v1::Webhook w = Register("/hook", 5);
  ASSERT_EQ(*engine_->Record(Event("evt_G")), 1);
  auto d = WaitForStatus("evt_G", v1::DELIVERY_STATUS_FAILED);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->attempts_size(), 1);
  EXPECT_FALSE(registry_->Get(w.id())->active());
  EXPECT_EQ(*engine_->Record(Event("evt_G2")), 0) << "a disabled endpoint gets nothing new";
  EXPECT_EQ(ReceivedCount(), 1u);
}

TEST_F(DeliveryEngineTest, TimeoutsAreRecordedThenTheDeliveryFails) {
  Register("/hang", 1, absl::Milliseconds(200));
  ASSERT_EQ(*engine_->Record(Event("evt_T")), 1);
  auto d = WaitForStatus("evt_T", v1::DELIVERY_STATUS_FAILED);
  ASSERT_TRUE(d.has_value());
  ASSERT_EQ(d->attempts_size(), 2) << "1 + retry_attempts";
  for (const auto& a : d->attempts()) {
    EXPECT_EQ(a.http_status(), 0u);
    EXPECT_THAT(a.error(), ::testing::StartsWith("timeout"));
  }
}

TEST_F(DeliveryEngineTest, RecordingTheSameEventTwiceCreatesOneDelivery) {
  Register("/hook", 3);
  EXPECT_EQ(*engine_->Record(Event("evt_D")), 1);
  EXPECT_EQ(*engine_->Record(Event("evt_D")), 0);
  ASSERT_TRUE(WaitForStatus("evt_D", v1::DELIVERY_STATUS_DELIVERED).has_value());
  EXPECT_EQ(ReceivedCount(), 1u);
}

}  // namespace
}  // namespace switchboard::webhooks
