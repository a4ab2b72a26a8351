// The delivery engine with the real curl sender against a real local HTTP
// receiver: retries, Retry-After, 410, timeouts, signatures, idempotence.
#include "services/webhook_delivery/delivery_engine.h"

#include <filesystem>

#include "absl/strings/numbers.h"
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

// Forwards to a real sender. A `done` that runs after OwnerGone (the engine
// it calls back into was destroyed) is counted, not forwarded.
class ObservedSender : public HttpSender {
 public:
  explicit ObservedSender(HttpSender* real) : real_(real) {}
  void Send(HttpCall call, std::function<void(HttpResult)> done) override {
    real_->Send(std::move(call), [this, done = std::move(done)](HttpResult r) {
      absl::MutexLock lock(&mu_);
      if (owner_gone_) {
        ++late_;
        return;
      }
      done(std::move(r));
    });
  }
  void Stop() override { real_->Stop(); }
  void OwnerGone() {
    absl::MutexLock lock(&mu_);
    owner_gone_ = true;
  }
  // True when a `done` ran after OwnerGone within `window`.
  bool LateCallbackWithin(absl::Duration window) {
    absl::MutexLock lock(&mu_);
    auto late = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return late_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&late), window);
  }

 private:
  HttpSender* const real_;
  absl::Mutex mu_;
  bool owner_gone_ ABSL_GUARDED_BY(mu_) = false;
  int late_ ABSL_GUARDED_BY(mu_) = 0;
};

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
    rc.targets.allow_private = true;
    // Registration never waits for DNS here: every name is the receiver.
    rc.resolve = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
      return std::vector<std::string>{"127.0.0.1"};
    };
    registry_ = std::make_unique<WebhookRegistry>(rc, webhooks_.get(), RealClock::Get());
    EngineConfig ec;
    ec.targets.allow_private = true;
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
      {
        absl::MutexLock lock(&mu_);
        ++hang_requests_;
      }
      release_.WaitForNotificationWithTimeout(absl::Seconds(20));
      absl::MutexLock lock(&mu_);
      ++hang_answers_;
      return HttpResponse{200, "text/plain", ""};
    });
    port_ = *receiver_->Start("127.0.0.1:0");
    engine_->Start();
  }
  void TearDown() override {
    if (!release_.HasBeenNotified()) release_.Notify();
    if (!release_dns_.HasBeenNotified()) release_dns_.Notify();
    engine_.reset();
    receiver_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Replaces the engine. Stopping an engine stops its sender, so the new one
  // gets a curl sender of its own, declared (as in main.cc) before the engine
  // so that the engine goes first; `observe` puts observed_ in between.
  void RestartEngine(EngineConfig ec, bool observe = false) {
    engine_.reset();
    observed_.reset();
    own_sender_ = std::make_unique<CurlMultiSender>();
    HttpSender* sender = own_sender_.get();
    if (observe) {
      observed_ = std::make_unique<ObservedSender>(sender);
      sender = observed_.get();
    }
    engine_ = std::make_unique<DeliveryEngine>(ec, registry_.get(), deliveries_.get(), sender,
                                               RealClock::Get());
    engine_->Start();
  }
  // A resolver that hangs for "hang.example" until release_dns_ (counting
  // the lookups that started) and answers 127.0.0.1 for any other name.
  Resolver HangingResolver() {
    return [this](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
      if (host != "hang.example") return std::vector<std::string>{"127.0.0.1"};
      {
        absl::MutexLock lock(&mu_);
        ++hanging_lookups_;
      }
      release_dns_.WaitForNotificationWithTimeout(absl::Seconds(60));
      return absl::UnavailableError("hang.example: no answer");
    };
  }
  bool WaitFor(std::function<bool()> condition, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto met = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return condition(); };
    return mu_.AwaitWithTimeout(absl::Condition(&met), timeout);
  }

  v1::Webhook Register(const std::string& path, uint32_t retries,
                       absl::Duration timeout = absl::Seconds(5),
                       const std::string& host = "127.0.0.1", const std::string& events = "order.*",
                       const std::string& secret = "") {
    v1::RegisterWebhookRequest r;
    r.set_url(absl::StrCat("http://", host, ":", port_, path));
    r.add_events(events);
    r.set_secret(secret);
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
  std::unique_ptr<CurlMultiSender> own_sender_;
  std::unique_ptr<ObservedSender> observed_;
  std::unique_ptr<DeliveryEngine> engine_;
  std::unique_ptr<AdminHttpServer> receiver_;
  int port_ = 0;
  absl::Mutex mu_;
  std::vector<Received> received_;
  std::deque<HttpResponse> script_;
  absl::Notification release_;
  absl::Notification release_dns_;
  int hang_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int hang_answers_ ABSL_GUARDED_BY(mu_) = 0;
  int hanging_lookups_ ABSL_GUARDED_BY(mu_) = 0;
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

// Resolution runs off the scheduler: an endpoint whose DNS hangs holds one
// resolver thread, and the others' deliveries go on.
TEST_F(DeliveryEngineTest, HangingResolverDoesNotDelayOtherEndpoints) {
  EngineConfig ec;
  ec.targets.allow_private = true;
  ec.resolve = HangingResolver();
  RestartEngine(ec);
  Register("/hook", 0, absl::Seconds(5), "hang.example", "order.hang");
  v1::Webhook healthy = Register("/hook", 0, absl::Seconds(5), "healthy.example", "order.created");
  events::v1::Event hang_event = Event("evt_H1");
  hang_event.set_type("order.hang");
  ASSERT_EQ(*engine_->Record(hang_event), 1);
  ASSERT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hanging_lookups_ > 0; },
                      absl::Seconds(5)))
      << "the hanging endpoint's lookup started";
  absl::Time start = absl::Now();
  ASSERT_EQ(*engine_->Record(Event("evt_H2")), 1);
  ASSERT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !received_.empty(); },
                      absl::Seconds(5)))
      << "the healthy endpoint waited for the hanging resolver";
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_FALSE(release_dns_.HasBeenNotified()) << "still hanging";
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(received_[0].headers.at("x-webhook-id"), healthy.id());
    EXPECT_EQ(received_[0].headers.at("webhook-id"), "evt_H2");
  }
  ASSERT_TRUE(WaitForStatus("evt_H2", v1::DELIVERY_STATUS_DELIVERED).has_value());
  release_dns_.Notify();  // so that Stop can join the resolver thread
  auto failed = WaitForStatus("evt_H1", v1::DELIVERY_STATUS_FAILED);
  ASSERT_TRUE(failed.has_value());
  EXPECT_THAT(failed->attempts(0).error(), ::testing::HasSubstr("no answer"));
}

// SPEC §5: one slow endpoint must not delay the others. A backlog larger than
// max_in_flight on an endpoint that can take nothing now (resolving, or at
// its per-endpoint limit) used to fill every Due() read, so the scheduler
// never saw the other endpoints' deliveries behind it.
TEST_F(DeliveryEngineTest, AHangingEndpointsBacklogDoesNotDelayOthers) {
  EngineConfig ec;
  ec.targets.allow_private = true;
  ec.max_in_flight = 8;
  ec.resolve = HangingResolver();
  RestartEngine(ec);
  Register("/hook", 0, absl::Seconds(5), "hang.example", "order.hang");
  Register("/hook", 0, absl::Seconds(5), "healthy.example", "order.created");
  for (int i = 0; i < 20; ++i) {
    events::v1::Event e = Event(absl::StrCat("evt_B", i));
    e.set_type("order.hang");
    ASSERT_EQ(*engine_->Record(e), 1);
  }
  ASSERT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hanging_lookups_ > 0; },
                      absl::Seconds(5)));
  ASSERT_EQ(*engine_->Record(Event("evt_B_healthy")), 1);
  EXPECT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !received_.empty(); },
                      absl::Seconds(5)))
      << "the healthy endpoint waited behind the hanging endpoint's backlog";
}

// What a stopping replica claimed and never answered goes back to the
// outbox at once: another replica (here another owner of the same store)
// claims it now, not when the lease would have run out.
TEST_F(DeliveryEngineTest, StopGivesBackWhatItClaimed) {
  EngineConfig ec;
  ec.targets.allow_private = true;
  ec.lease = absl::Minutes(10);
  RestartEngine(ec);
  Register("/hang", 0, absl::Seconds(30));
  ASSERT_EQ(*engine_->Record(Event("evt_GB")), 1);
  ASSERT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hang_requests_ > 0; },
                      absl::Seconds(10)));
  ClaimRequest req;
  req.owner = "other-replica";
  req.now = absl::Now();
  req.limit = 10;
  EXPECT_TRUE(deliveries_->Claim(req)->records.empty()) << "claimed by the engine";
  engine_.reset();
  req.now = absl::Now();
  absl::StatusOr<Claimed> after = deliveries_->Claim(req);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->records.size(), 1u) << "the stopped engine kept its claim";
  EXPECT_EQ(after->records[0].delivery.event_id(), "evt_GB");
}

// Shutdown with a request in flight (the endpoint answers after the engine is
// gone, or never: 30 s timeout): Stop abandons the transfer instead of waiting
// for it, and no sender callback runs into the destroyed engine. The delivery
// stays due in the outbox for the next start.
TEST_F(DeliveryEngineTest, StopWithARequestInFlightReturnsPromptly) {
  EngineConfig ec;
  ec.targets.allow_private = true;
  RestartEngine(ec, /*observe=*/true);
  Register("/hang", 0, absl::Seconds(30));
  ASSERT_EQ(*engine_->Record(Event("evt_S")), 1);
  ASSERT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hang_requests_ > 0; },
                      absl::Seconds(10)))
      << "the request reached the endpoint";
  absl::Time start = absl::Now();
  engine_.reset();  // Stop, then the destructor
  EXPECT_LT(absl::Now() - start, absl::Seconds(3)) << "Stop waited for the transfer";
  observed_->OwnerGone();
  release_.Notify();  // the endpoint answers now
  ASSERT_TRUE(WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hang_answers_ > 0; },
                      absl::Seconds(10)));
  // The answer is on its way; a sender still running would hand it to the
  // engine within milliseconds. Nothing may arrive (a bounded wait for
  // something that must not happen).
  EXPECT_FALSE(observed_->LateCallbackWithin(absl::Seconds(1)))
      << "a sender callback ran after the engine was destroyed";
  auto list = deliveries_->List("", v1::DELIVERY_STATUS_UNSPECIFIED, "evt_S", 10);
  ASSERT_TRUE(list.ok() && list->size() == 1u);
  EXPECT_EQ((*list)[0].delivery.status(), v1::DELIVERY_STATUS_PENDING) << "due again after restart";
  EXPECT_EQ((*list)[0].delivery.attempts_size(), 0);
}

// The original design's secret ("webhook-secret-key", no whsec_ prefix) is a
// raw key: deliveries signed with it verify with that same secret.
TEST_F(DeliveryEngineTest, RawSecretSignsDeliveriesThatVerify) {
  v1::Webhook w =
      Register("/hook", 0, absl::Seconds(5), "127.0.0.1", "order.*", "webhook-secret-key");
  EXPECT_EQ(w.secret(), "webhook-secret-key");
  ASSERT_EQ(*engine_->Record(Event("evt_RAW")), 1);
  ASSERT_TRUE(WaitForStatus("evt_RAW", v1::DELIVERY_STATUS_DELIVERED).has_value());
  absl::MutexLock lock(&mu_);
  ASSERT_EQ(received_.size(), 1u);
  const Received& r = received_[0];
  EXPECT_TRUE(Verify("webhook-secret-key", r.headers.at("webhook-id"),
                     r.headers.at("webhook-timestamp"), r.headers.at("webhook-signature"), r.body,
                     absl::Now())
                  .ok());
  // The key is the secret's bytes: HMAC-SHA256("webhook-secret-key", ...).
  int64_t ts = 0;
  ASSERT_TRUE(absl::SimpleAtoi(r.headers.at("webhook-timestamp"), &ts));
  EXPECT_EQ(r.headers.at("webhook-signature"), Sign("webhook-secret-key", "evt_RAW", ts, r.body));
}

}  // namespace
}  // namespace switchboard::webhooks
