// Signing against the Standard Webhooks reference vectors, secrets, receiver
// verification, and the SSRF guard's address and URL tables.
#include <filesystem>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "libs/broker_client/null_broker_client.h"
#include "libs/common/clock.h"
#include "libs/common/grpc_server.h"
#include "libs/common/proto_json.h"
#include "services/webhook_delivery/delivery_engine.h"
#include "services/webhook_delivery/grpc_service.h"
#include "services/webhook_delivery/registry.h"
#include "services/webhook_delivery/signing.h"
#include "services/webhook_delivery/target_guard.h"
#include "services/webhook_delivery/webhook_core.h"

// The gRPC edge of webhook-delivery: RPCs run on its own executors, never
// on gRPC's threads, and registrations never wait for a resubscription.
namespace switchboard::webhooks {
namespace {

class FakeBroker;
class FakeSubscription : public BrokerSubscription {
 public:
  explicit FakeSubscription(FakeBroker* broker) : broker_(broker) {}
  ~FakeSubscription() override { Stop(); }
  void Stop() override;
  bool connected() const override { return true; }

 private:
  FakeBroker* const broker_;
  bool stopped_ = false;
};

class FakeBroker : public NullBrokerClient {
 public:
  std::unique_ptr<BrokerSubscription> SubscribeGroup(broker::v1::SubscribeRequest request,
                                                     DeliveryCallback) override {
    absl::MutexLock lock(&mu_);
    requests_.push_back(std::move(request));
    ++live_;
    return std::make_unique<FakeSubscription>(this);
  }
  void HoldStops() {
    absl::MutexLock lock(&mu_);
    hold_stops_ = true;
  }
  // Waits until a subscription asks for `type` among its types.
  bool WaitForSubscriptionTo(const std::string& type, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto asked = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& r : requests_) {
        for (const std::string& t : r.types()) {
          if (t == type) return true;
        }
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&asked), timeout);
  }
  // Waits until a Stop is being held.
  bool WaitForHeldStop(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto held = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_stops_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&held), timeout);
  }
  // Subscriptions made and not stopped yet.
  int live() {
    absl::MutexLock lock(&mu_);
    return live_;
  }

  absl::Notification release_stop;

 private:
  friend class FakeSubscription;
  void Stopped() {
    bool hold;
    {
      absl::MutexLock lock(&mu_);
      hold = hold_stops_;
    }
    if (hold) {
      {
        absl::MutexLock lock(&mu_);
        ++held_stops_;
      }
      release_stop.WaitForNotificationWithTimeout(absl::Seconds(30));
    }
    absl::MutexLock lock(&mu_);
    --live_;
  }

  absl::Mutex mu_;
  bool hold_stops_ ABSL_GUARDED_BY(mu_) = false;
  int live_ ABSL_GUARDED_BY(mu_) = 0;
  int held_stops_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<broker::v1::SubscribeRequest> requests_ ABSL_GUARDED_BY(mu_);
};

void FakeSubscription::Stop() {
  if (stopped_) return;
  stopped_ = true;
  broker_->Stopped();
}

// HttpSender that never answers (the engine is not started in these tests).
class NullSender : public HttpSender {
 public:
  void Send(HttpCall, std::function<void(HttpResult)>) override {}
};

// WebhookCore and its gRPC edge on fakes: a broker that is never there and a
// resolver that hangs for "hang.example" until the test releases it.
class WebhookServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("wh-svc-test-" + std::to_string(getpid()) + "-" + std::to_string(rand()));
    webhooks_ = *SqliteWebhookStore::Open(dir_);
    deliveries_ = *SqliteDeliveryStore::Open(dir_);
    RegistryConfig rc;
    rc.resolve = [this](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
      if (host == "hang.example") {
        {
          absl::MutexLock lock(&mu_);
          ++hanging_;
        }
        release_dns_.WaitForNotificationWithTimeout(absl::Seconds(60));
      }
      return std::vector<std::string>{"93.184.216.34"};
    };
    registry_ = std::make_unique<WebhookRegistry>(rc, webhooks_.get(), RealClock::Get());
    engine_ = std::make_unique<DeliveryEngine>(EngineConfig{}, registry_.get(), deliveries_.get(),
                                               &sender_, RealClock::Get());
    core_ = std::make_unique<WebhookCore>(WebhookCoreOptions{}, registry_.get(), deliveries_.get(),
                                          engine_.get(), &broker_, RealClock::Get(), nullptr);
    ASSERT_TRUE(core_->Start().ok());
  }
  void TearDown() override {
    ReleaseAll();
    core_->Shutdown();
    core_.reset();
    engine_.reset();
    registry_.reset();
    std::filesystem::remove_all(dir_);
  }
  void ReleaseAll() {
    if (!release_dns_.HasBeenNotified()) release_dns_.Notify();
    if (!broker_.release_stop.HasBeenNotified()) broker_.release_stop.Notify();
  }
  int Hanging() {
    absl::MutexLock lock(&mu_);
    return hanging_;
  }
  bool WaitForHanging(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hanging_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

  std::filesystem::path dir_;
  std::unique_ptr<SqliteWebhookStore> webhooks_;
  std::unique_ptr<SqliteDeliveryStore> deliveries_;
  std::unique_ptr<WebhookRegistry> registry_;
  NullSender sender_;
  FakeBroker broker_;
  std::unique_ptr<DeliveryEngine> engine_;
  std::unique_ptr<WebhookCore> core_;
  absl::Notification release_dns_;
  absl::Mutex mu_;
  int hanging_ ABSL_GUARDED_BY(mu_) = 0;
};

// Async RegisterWebhook calls on an in-process stub. Whatever a test does,
// the calls are over (lookups released first, then waited for or cancelled)
// before the server and the calls' objects go.
class PendingRegistrations {
 public:
  struct Call {
    grpc::ClientContext ctx;
    v1::RegisterWebhookRequest request;
    v1::Webhook response;
    grpc::Status status;
    absl::Notification done;
  };
  PendingRegistrations(v1::WebhookService::Stub* stub, std::function<void()> release)
      : stub_(stub), release_(std::move(release)) {}
  ~PendingRegistrations() {
    release_();
    for (auto& c : calls_) {
      if (!c->done.WaitForNotificationWithTimeout(absl::Seconds(30))) c->ctx.TryCancel();
      c->done.WaitForNotification();
    }
  }
  Call* Start(const std::string& url, absl::Duration deadline) {
    auto c = std::make_unique<Call>();
    c->request.set_url(url);
    c->request.add_events("order.*");
    c->ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    Call* raw = c.get();
    stub_->async()->RegisterWebhook(&raw->ctx, &raw->request, &raw->response,
                                    [raw](grpc::Status s) {
                                      raw->status = std::move(s);
                                      raw->done.Notify();
                                    });
    calls_.push_back(std::move(c));
    return raw;
  }
  Call* operator[](size_t i) { return calls_[i].get(); }
  const std::vector<std::unique_ptr<Call>>& all() const { return calls_; }

 private:
  v1::WebhookService::Stub* const stub_;
  std::function<void()> release_;
  std::vector<std::unique_ptr<Call>> calls_;
};

// Register and Update resolve the URL (DNS can hang) and may resubscribe:
// that runs on the service's own threads, never on gRPC's, so reads are
// answered while registrations hang.
TEST_F(WebhookServiceTest, HangingRegistrationsDoNotDelayOtherCalls) {
  WebhookGrpcService service(core_.get());
  auto server = StartGrpcServer({.addr = "127.0.0.1:0"}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  // In-process: the calls go through gRPC's server and its callback threads
  // as over TCP.
  auto stub =
      v1::WebhookService::NewStub(server->server->InProcessChannel(grpc::ChannelArguments()));
  // More than gRPC has callback threads on a small machine.
  constexpr int kHanging = 16;
  PendingRegistrations pending(stub.get(), [this] { ReleaseAll(); });
  for (int i = 0; i < kHanging; ++i) {
    pending.Start(absl::StrCat("https://hang.example/hook", i), absl::Seconds(120));
  }
  ASSERT_TRUE(WaitForHanging(4, absl::Seconds(20))) << "registrations resolving: " << Hanging();
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext list_ctx;
    list_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListWebhooksResponse list;
    grpc::Status s = stub->ListWebhooks(&list_ctx, {}, &list);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    grpc::ClientContext stats_ctx;
    stats_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::GetStatsResponse stats;
    s = stub->GetStats(&stats_ctx, {}, &stats);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  }
  release_dns_.Notify();
  for (auto& p : pending.all()) {
    ASSERT_TRUE(p->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_TRUE(p->status.ok()) << p->status.error_message();
  }
  EXPECT_EQ(registry_->List().size(), static_cast<size_t>(kHanging));
}

// A full pool answers RESOURCE_EXHAUSTED at once rather than queueing more.
TEST_F(WebhookServiceTest, AFullQueueAnswersResourceExhausted) {
  WebhookGrpcService service(core_.get(), {.threads = 1, .max_queued = 1});
  auto server = StartGrpcServer({.addr = "127.0.0.1:0"}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  // In-process: the calls go through gRPC's server and its callback threads
  // as over TCP.
  auto stub =
      v1::WebhookService::NewStub(server->server->InProcessChannel(grpc::ChannelArguments()));
  PendingRegistrations pending(stub.get(), [this] { ReleaseAll(); });
  auto start = [&] { pending.Start("https://hang.example/hook", absl::Seconds(60)); };
  start();
  ASSERT_TRUE(WaitForHanging(1, absl::Seconds(10)));  // the one thread is busy
  start();
  start();  // one of these two is queued, the other refused
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  int refused = -1;
  while (refused < 0 && absl::Now() < deadline) {
    for (int i : {1, 2}) {
      if (pending[i]->done.WaitForNotificationWithTimeout(absl::Milliseconds(10))) refused = i;
    }
  }
  ASSERT_GE(refused, 1) << "neither was answered while the pool was full";
  EXPECT_EQ(pending[refused]->status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << pending[refused]->status.error_message();
  ReleaseAll();
  for (int i : {0, 1, 2}) {
    ASSERT_TRUE(pending[i]->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    if (i != refused) {
      EXPECT_TRUE(pending[i]->status.ok()) << pending[i]->status.error_message();
    }
  }
}

// A registration that needs a wider subscription does not wait for the old
// subscription to stop (that joins its thread): the subscriber thread does it.
TEST_F(WebhookServiceTest, RegisterDoesNotWaitForTheResubscription) {
  broker_.HoldStops();  // the current subscription's thread is slow to join
  v1::RegisterWebhookRequest req;
  req.set_url("https://crm.example.com/hooks");
  req.add_events("payment.*");  // not covered by order.* and job.*
  absl::Time start = absl::Now();
  auto w = core_->Register(req);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "Register waited for the resubscription";
  // The resubscription (with payment.*) is under way, stuck in the old Stop.
  ASSERT_TRUE(broker_.WaitForHeldStop(absl::Seconds(10)));
  v1::UpdateWebhookRequest update;
  update.set_id(w->id());
  update.add_events("refund.*");
  start = absl::Now();
  ASSERT_TRUE(core_->Update(update).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "Update waited for the resubscription";
  broker_.release_stop.Notify();  // the old subscription stops now
  EXPECT_TRUE(broker_.WaitForSubscriptionTo("payment.*", absl::Seconds(10)));
  EXPECT_TRUE(broker_.WaitForSubscriptionTo("refund.*", absl::Seconds(10)));
  // Shutdown leaves no subscription behind, whatever was in progress.
  core_->Shutdown();
  EXPECT_EQ(broker_.live(), 0);
}

}  // namespace
}  // namespace switchboard::webhooks
