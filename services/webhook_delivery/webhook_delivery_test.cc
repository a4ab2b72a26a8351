// Signing against the Standard Webhooks reference vectors, secrets, receiver
// verification, and the registry.
#include <cmath>
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

namespace switchboard::webhooks {
namespace {

TEST(SigningTest, StandardWebhooksReferenceVectors) {
  auto key = DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(Sign(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, "{\"test\": 2432232314}"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  key = DecodeSecret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(Sign(*key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553,
                 R"({"email":"test@example.com","username":"test_user"})"),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

TEST(SigningTest, GeneratedSecretsDecodeAndDiffer) {
  auto a = GenerateSecret();
  auto b = GenerateSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(absl::StartsWith(*a, "whsec_"));
  EXPECT_NE(*a, *b);
  auto key = DecodeSecret(*a);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->size(), 32u);
}

TEST(SigningTest, BadSecretsNameTheField) {
  for (const std::string& bad :
       {std::string("short-secret"), std::string("a raw key with spaces in it"),
        std::string(257, 'k'), std::string("webhook-secret-k\xc3\xa9y"),
        std::string("webhook-secret\tkey"), std::string("whsec_!!!not base64!!!"),
        std::string("whsec_c2hvcnQ=") /* "short" */, std::string("whsec_webhook-secret-key")}) {
    auto key = DecodeSecret(bad);
    ASSERT_FALSE(key.ok()) << bad;
    EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(key.status().message(), "secret: ")) << key.status();
  }
}

// The original design's secret "webhook-secret-key" is a raw HMAC key: its
// own bytes sign. The expected value is from `openssl dgst -sha256 -hmac
// webhook-secret-key` (and npm standardwebhooks with {format: "raw"}).
TEST(SigningTest, RawSecretsAreTheirOwnKeyBytes) {
  auto key = DecodeSecret("webhook-secret-key");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(*key, "webhook-secret-key");
  EXPECT_EQ(Sign(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, "{\"test\": 2432232314}"),
            "v1,CTX1vlCAElq/nrDY4px0CB1UCoTLfmccjtx6J+iB+D4=");
  EXPECT_TRUE(Verify("webhook-secret-key", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                     "v1,CTX1vlCAElq/nrDY4px0CB1UCoTLfmccjtx6J+iB+D4=", "{\"test\": 2432232314}",
                     absl::FromUnixSeconds(1614265330))
                  .ok());
  // 16 characters is enough; a whsec_ secret keeps its base64 meaning.
  EXPECT_EQ(*DecodeSecret("0123456789abcdef"), "0123456789abcdef");
  EXPECT_EQ(DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")->size(), 24u);
}

TEST(SigningTest, VerifyAcceptsEitherSecretDuringRotationAndRejectsTampering) {
  std::string old_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  std::string new_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
  std::string body = R"({"id":"evt_1","event":"order.created","data":{}})";
  absl::Time now = absl::FromUnixSeconds(1700000000);
  std::string header = SignatureHeader({*DecodeSecret(old_secret), *DecodeSecret(new_secret)},
                                       "evt_1", 1700000000, body);
  EXPECT_THAT(header, ::testing::MatchesRegex("v1,[^ ]+ v1,[^ ]+"));
  EXPECT_TRUE(Verify(old_secret, "evt_1", "1700000000", header, body, now).ok());
  EXPECT_TRUE(Verify(new_secret, "evt_1", "1700000000", header, body, now).ok());
  EXPECT_FALSE(Verify(old_secret, "evt_1", "1700000000", header, body + " ", now).ok());
  EXPECT_FALSE(Verify(old_secret, "evt_2", "1700000000", header, body, now).ok());
  EXPECT_FALSE(Verify(old_secret, "evt_1", "1700000000", header, body, now + absl::Minutes(6)).ok())
      << "stale timestamps are rejected";
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("wh-test-" + std::to_string(getpid()) + "-" + std::to_string(rand()));
    Open(false);
  }
  void TearDown() override {
    registry_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open(bool allow_private) {
    registry_.reset();
    store_.reset();
    auto store = SqliteWebhookStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    RegistryConfig config;
    config.targets.allow_private = allow_private;
    // Names resolve to a public address unless the test says otherwise.
    config.resolve = [](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
      if (host == "localhost") return std::vector<std::string>{"127.0.0.1"};
      if (host == "rebind.example") return std::vector<std::string>{"93.184.216.34", "10.0.0.7"};
      return std::vector<std::string>{"93.184.216.34"};
    };
    registry_ = std::make_unique<WebhookRegistry>(config, store_.get(), &clock_);
    ASSERT_TRUE(registry_->Load().ok());
  }
  static v1::RegisterWebhookRequest Req(const std::string& url = "https://crm.example.com/hooks") {
    v1::RegisterWebhookRequest r;
    r.set_url(url);
    r.add_events("order.*");
    return r;
  }

  std::filesystem::path dir_;
  FakeClock clock_;
  std::unique_ptr<SqliteWebhookStore> store_;
  std::unique_ptr<WebhookRegistry> registry_;
};

TEST_F(RegistryTest, RegisterGeneratesASecretShownOnlyOnce) {
  auto w = registry_->Register(Req());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(absl::StartsWith(w->id(), "wh_"));
  EXPECT_TRUE(absl::StartsWith(w->secret(), "whsec_"));
  EXPECT_EQ(w->retry_attempts(), 5u) << "WEBHOOK_MAX_RETRIES default";
  EXPECT_EQ(google::protobuf::util::TimeUtil::DurationToMilliseconds(w->retry_delay()), 5000);
  EXPECT_EQ(google::protobuf::util::TimeUtil::DurationToMilliseconds(w->timeout()), 30000);
  EXPECT_TRUE(w->active());
  ASSERT_EQ(registry_->List().size(), 1u);
  EXPECT_TRUE(registry_->List()[0].secret().empty()) << "list output never has secrets";
  EXPECT_TRUE(registry_->Get(w->id())->secret().empty());
}

TEST_F(RegistryTest, BadInputNamesTheFieldAndStoresNothing) {
  struct Case {
    std::function<void(v1::RegisterWebhookRequest&)> edit;
    const char* prefix;
  };
  std::vector<Case> cases = {
      {[](auto& r) { r.set_url("ftp://crm.example.com/x"); }, "url: scheme 'ftp'"},
      {[](auto& r) { r.set_url("not a url"); }, "url: "},
      {[](auto& r) { r.set_url(""); }, "url: required"},
      {[](auto& r) { r.clear_events(); }, "events: "},
      {[](auto& r) { r.add_events("order.**"); }, "events[1]: "},
      {[](auto& r) { r.set_secret("not-a-secret"); }, "secret: must start with 'whsec_'"},
      {[](auto& r) { r.set_secret("whsec_c2hvcnQ="); }, "secret: the key is 5 bytes"},
      {[](auto& r) { r.set_retry_attempts(500); }, "retry_attempts: "},
      {[](auto& r) { r.mutable_retry_delay()->set_seconds(-1); }, "retry_delay: "},
      {[](auto& r) { r.mutable_retry_delay()->set_seconds(86400 * 30); }, "retry_delay: "},
      {[](auto& r) { r.mutable_timeout()->set_seconds(3600); }, "timeout: "},
      {[](auto& r) { r.set_description(std::string(2000, 'x')); }, "description: "},
      {[](auto& r) { r.mutable_rate_limit(); }, "rate_limit.per_second: 0 is outside"},
      {[](auto& r) { r.mutable_rate_limit()->set_per_second(-1); }, "rate_limit.per_second: "},
      {[](auto& r) { r.mutable_rate_limit()->set_per_second(std::nan("")); },
       "rate_limit.per_second: "},
      {[](auto& r) { r.mutable_rate_limit()->set_per_second(1e9); }, "rate_limit.per_second: "},
      {[](auto& r) {
         r.mutable_rate_limit()->set_per_second(10);
         r.mutable_rate_limit()->set_burst(1000000);
       },
       "rate_limit.burst: "},
  };
  for (const Case& c : cases) {
    v1::RegisterWebhookRequest r = Req();
    c.edit(r);
    auto w = registry_->Register(r);
    ASSERT_FALSE(w.ok()) << c.prefix;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
    EXPECT_TRUE(absl::StartsWith(w.status().message(), c.prefix)) << w.status().message();
  }
  EXPECT_TRUE(registry_->List().empty());
  EXPECT_TRUE(store_->List()->empty());
}

TEST_F(RegistryTest, ARateLimitIsSetChangedAndRemoved) {
  v1::RegisterWebhookRequest req = Req();
  req.mutable_rate_limit()->set_per_second(2.5);
  auto w = registry_->Register(req);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->rate_limit().per_second(), 2.5);
  std::map<std::string, RateLimitSpec> limits = registry_->RateLimits();
  ASSERT_EQ(limits.count(w->id()), 1u);
  EXPECT_EQ(limits[w->id()].per_second, 2.5);
  EXPECT_EQ(limits[w->id()].burst, 3) << "burst defaults to the rate rounded up";
  v1::UpdateWebhookRequest update;
  update.set_id(w->id());
  update.mutable_rate_limit()->set_per_second(100);
  update.mutable_rate_limit()->set_burst(10);
  ASSERT_TRUE(registry_->Update(update).ok());
  EXPECT_EQ(registry_->RateLimits()[w->id()].burst, 10);
  update.mutable_rate_limit()->set_per_second(-3);
  auto bad = registry_->Update(update);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "rate_limit.per_second: "));
  EXPECT_EQ(registry_->RateLimits()[w->id()].per_second, 100) << "a refused update changes nothing";
  update.mutable_rate_limit()->set_per_second(0);
  ASSERT_TRUE(registry_->Update(update).ok());
  EXPECT_TRUE(registry_->RateLimits().empty()) << "per_second 0 removes the limit";
  Open(false);
  EXPECT_FALSE(registry_->Get(w->id())->has_rate_limit()) << "as stored";
}

TEST_F(RegistryTest, PrivateTargetsAreRefusedUnlessAllowed) {
  for (const char* url :
       {"http://127.0.0.1:8080/h", "http://10.1.2.3/h", "http://172.16.5.4/h",
        "http://192.168.0.9/h", "http://100.64.0.1/h", "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/h", "http://[fd00::1]/h", "http://[fe80::1]/h", "http://[::ffff:127.0.0.1]/h",
        "http://localhost:9000/h", "https://rebind.example/h"}) {
    auto w = registry_->Register(Req(url));
    ASSERT_FALSE(w.ok()) << url;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_TRUE(absl::StartsWith(w.status().message(), "url: ")) << w.status().message();
  }
  Open(/*allow_private=*/true);
  EXPECT_TRUE(registry_->Register(Req("http://127.0.0.1:8080/h")).ok());
  EXPECT_TRUE(registry_->Register(Req("http://localhost:9000/h")).ok());
}

// The original design's registration body, verbatim (its secret is no whsec_
// secret): accepted, and the secret's bytes are the signing key.
TEST_F(RegistryTest, TheDesignsRegistrationBodyIsAccepted) {
  v1::RegisterWebhookRequest r;
  ASSERT_TRUE(JsonToProtoWithMillis(
                  R"({"url":"https://api.external.com/webhooks/orders",)"
                  R"("secret":"webhook-secret-key",)"
                  R"("events":["order.created","order.payment_completed","order.completed"],)"
                  R"("retryAttempts":3,"retryDelay":5000,"timeout":30000})",
                  &r)
                  .ok());
  auto w = registry_->Register(r);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->secret(), "webhook-secret-key");
  auto matching = registry_->Matching("order.created");
  ASSERT_EQ(matching.size(), 1u);
  EXPECT_EQ(matching[0].keys, std::vector<std::string>{"webhook-secret-key"});
  // Rotating to another raw key keeps both signing.
  v1::RotateSecretRequest rotate;
  rotate.set_id(w->id());
  rotate.set_secret("another-raw-secret-key");
  ASSERT_TRUE(registry_->RotateSecret(rotate).ok());
  EXPECT_EQ(registry_->Matching("order.created")[0].keys,
            (std::vector<std::string>{"another-raw-secret-key", "webhook-secret-key"}));
  Open(false);  // survives a restart
  EXPECT_EQ(registry_->Matching("order.created")[0].keys.size(), 2u);
}

TEST_F(RegistryTest, RotationSignsWithBothSecretsFor24Hours) {
  auto w = registry_->Register(Req());
  ASSERT_TRUE(w.ok());
  std::string old_secret = w->secret();
  v1::RotateSecretRequest rotate;
  rotate.set_id(w->id());
  auto rotated = registry_->RotateSecret(rotate);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_NE(rotated->secret(), old_secret);
  auto matching = registry_->Matching("order.created");
  ASSERT_EQ(matching.size(), 1u);
  ASSERT_EQ(matching[0].keys.size(), 2u);
  EXPECT_EQ(matching[0].keys[0], *DecodeSecret(rotated->secret()));
  EXPECT_EQ(matching[0].keys[1], *DecodeSecret(old_secret));

  Open(false);  // survives a restart
  EXPECT_EQ(registry_->Matching("order.created")[0].keys.size(), 2u);
  clock_.Advance(absl::Hours(24) + absl::Seconds(1));
  matching = registry_->Matching("order.created");
  ASSERT_EQ(matching[0].keys.size(), 1u);
  EXPECT_EQ(matching[0].keys[0], *DecodeSecret(rotated->secret()));
}

TEST_F(RegistryTest, MatchingFollowsFiltersAndSkipsDisabledEndpoints) {
  auto orders = registry_->Register(Req());
  v1::RegisterWebhookRequest jobs = Req("https://ops.example.com/jobs");
  jobs.clear_events();
  jobs.add_events("job.failed");
  auto ops = registry_->Register(jobs);
  ASSERT_TRUE(orders.ok() && ops.ok());
  EXPECT_EQ(registry_->Matching("order.created").size(), 1u);
  EXPECT_EQ(registry_->Matching("job.failed").size(), 1u);
  EXPECT_EQ(registry_->Matching("job.started").size(), 0u);
  ASSERT_TRUE(registry_->Disable(orders->id(), "410 Gone").ok());
  EXPECT_EQ(registry_->Matching("order.created").size(), 0u);
  EXPECT_EQ(registry_->Get(orders->id())->disabled_reason(), "410 Gone");
  v1::UpdateWebhookRequest enable;
  enable.set_id(orders->id());
  enable.set_active(true);
  ASSERT_TRUE(registry_->Update(enable).ok());
  EXPECT_EQ(registry_->Matching("order.created").size(), 1u);
  ASSERT_TRUE(registry_->Unregister(ops->id()).ok());
  EXPECT_EQ(registry_->Unregister(ops->id()).code(), absl::StatusCode::kNotFound);
  Open(false);
  EXPECT_EQ(registry_->List().size(), 1u);
}

// The SQLite store, but writes fail while `fail_writes` is set (a full disk,
// a locked database).
class FlakyWebhookStore : public WebhookStore {
 public:
  explicit FlakyWebhookStore(WebhookStore* real) : real_(real) {}
  absl::StatusOr<uint64_t> Put(const WebhookRecord& record) override {
    if (fail_writes) return absl::UnavailableError("disk I/O error");
    return real_->Put(record);
  }
  absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) override {
    return real_->Get(id);
  }
  absl::StatusOr<bool> Delete(const std::string& id) override {
    if (fail_writes) return absl::UnavailableError("disk I/O error");
    return real_->Delete(id);
  }
  absl::StatusOr<std::vector<WebhookRecord>> List() override { return real_->List(); }
  absl::StatusOr<uint64_t> Generation() override { return real_->Generation(); }

  bool fail_writes = false;

 private:
  WebhookStore* const real_;
};

// The embedded store seen as shared: what two replicas' registries do over
// one Redis, without Redis (the conformance suite holds both stores to the
// same contract).
class SharedView : public FlakyWebhookStore {
 public:
  using FlakyWebhookStore::FlakyWebhookStore;
  bool shared() const override { return true; }
};

TEST_F(RegistryTest, ReplicasOnASharedStoreSeeEachOthersChangesAndLoseNone) {
  SharedView view(store_.get());
  RegistryConfig config;
  config.resolve = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"93.184.216.34"};
  };
  WebhookRegistry a(config, &view, &clock_), b(config, &view, &clock_);
  ASSERT_TRUE(a.Load().ok());
  ASSERT_TRUE(b.Load().ok());
  auto w = a.Register(Req());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(absl::IsNotFound(b.Get(w->id()).status())) << "not refreshed yet";
  EXPECT_TRUE(*b.Refresh());
  EXPECT_FALSE(*b.Refresh()) << "nothing changed since";
  EXPECT_TRUE(b.Get(w->id()).ok());
  auto w2 = a.Register(Req("https://other.example/"));
  ASSERT_TRUE(w2.ok()) << w2.status();
  EXPECT_TRUE(b.GetFresh(w2->id()).ok()) << "looked up in the store before a refresh";
  ASSERT_TRUE(a.Unregister(w2->id()).ok());
  EXPECT_TRUE(*b.Refresh());
  EXPECT_EQ(b.AllFilters(), std::vector<std::string>{"order.*"});
  // a disables the endpoint; b, not yet refreshed, changes its description:
  // b's change is made on what a wrote, so both stand.
  ASSERT_TRUE(a.Disable(w->id(), "410 Gone").ok());
  v1::UpdateWebhookRequest update;
  update.set_id(w->id());
  update.set_description("from b");
  auto updated = b.Update(update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_FALSE(updated->active());
  EXPECT_EQ(updated->description(), "from b");
  EXPECT_TRUE(*a.Refresh());
  EXPECT_EQ(a.Get(w->id())->description(), "from b");
  EXPECT_TRUE(a.AllFilters().empty()) << "disabled";
  // Unregistered by b while a still lists it: a's update is NOT_FOUND.
  ASSERT_TRUE(b.Unregister(w->id()).ok());
  EXPECT_TRUE(absl::IsNotFound(a.Update(update).status()));
  EXPECT_TRUE(a.List().empty());
}

// A delete the store refused leaves the webhook registered and matching:
// memory never says "gone" while the store (and so the next start) has it.
TEST_F(RegistryTest, FailedUnregisterKeepsTheWebhook) {
  FlakyWebhookStore flaky(store_.get());
  auto registry = std::make_unique<WebhookRegistry>(RegistryConfig{}, &flaky, &clock_);
  v1::RegisterWebhookRequest req = Req("https://93.184.216.34/hooks");
  auto w = registry->Register(req);
  ASSERT_TRUE(w.ok()) << w.status();
  flaky.fail_writes = true;
  absl::Status s = registry->Unregister(w->id());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(registry->Get(w->id()).ok()) << "still registered";
  EXPECT_EQ(registry->Matching("order.created").size(), 1u) << "still delivered to";
  EXPECT_EQ(registry->List().size(), 1u);
  // A restart agrees with what the running service says.
  auto restarted = std::make_unique<WebhookRegistry>(RegistryConfig{}, &flaky, &clock_);
  ASSERT_TRUE(restarted->Load().ok());
  EXPECT_TRUE(restarted->Get(w->id()).ok());

  flaky.fail_writes = false;
  ASSERT_TRUE(registry->Unregister(w->id()).ok());
  EXPECT_EQ(registry->Get(w->id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry->Matching("order.created").empty());
  restarted = std::make_unique<WebhookRegistry>(RegistryConfig{}, &flaky, &clock_);
  ASSERT_TRUE(restarted->Load().ok());
  EXPECT_TRUE(restarted->List().empty());
}

// Update, RotateSecret and Disable the same way: a refused write changes
// nothing in memory either.
TEST_F(RegistryTest, FailedWritesChangeNothing) {
  FlakyWebhookStore flaky(store_.get());
  auto registry = std::make_unique<WebhookRegistry>(RegistryConfig{}, &flaky, &clock_);
  auto w = registry->Register(Req("https://93.184.216.34/hooks"));
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string before = registry->Get(w->id())->DebugString();
  const std::vector<std::string> keys = *registry->SigningKeys(w->id());
  flaky.fail_writes = true;
  v1::UpdateWebhookRequest update;
  update.set_id(w->id());
  update.set_url("https://93.184.216.35/other");
  update.set_active(false);
  EXPECT_FALSE(registry->Update(update).ok());
  v1::RotateSecretRequest rotate;
  rotate.set_id(w->id());
  EXPECT_FALSE(registry->RotateSecret(rotate).ok());
  EXPECT_FALSE(registry->Disable(w->id(), "410 Gone").ok());
  EXPECT_EQ(registry->Get(w->id())->DebugString(), before);
  EXPECT_EQ(*registry->SigningKeys(w->id()), keys);
  EXPECT_EQ(registry->Matching("order.created").size(), 1u);
  v1::RegisterWebhookRequest another = Req("https://93.184.216.34/another");
  EXPECT_FALSE(registry->Register(another).ok());
  EXPECT_EQ(registry->List().size(), 1u);
}

// The JSON API's durations: whole milliseconds as in the original design, or
// protobuf's duration strings.
TEST(JsonMillisTest, NumbersBecomeDurationsAndStringsStay) {
  using google::protobuf::util::TimeUtil;
  v1::RegisterWebhookRequest r;
  // The original design's registration, verbatim.
  ASSERT_TRUE(JsonToProtoWithMillis(
                  R"({"url":"https://api.external.com/webhooks/orders",)"
                  R"("secret":"webhook-secret-key",)"
                  R"("events":["order.created","order.payment_completed","order.completed"],)"
                  R"("retryAttempts":3,"retryDelay":5000,"timeout":30000})",
                  &r)
                  .ok());
  EXPECT_EQ(r.retry_attempts(), 3u);
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(r.retry_delay()), 5000);
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(r.timeout()), 30000);
  EXPECT_EQ(r.events_size(), 3);
  v1::UpdateWebhookRequest u;
  ASSERT_TRUE(JsonToProtoWithMillis(R"({ "retry_delay" : 1 , "timeout":"2.5s"})", &u).ok());
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(u.retry_delay()), 1);
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(u.timeout()), 2500);
  u.Clear();
  ASSERT_TRUE(JsonToProtoWithMillis(R"({"retryDelay":5e3,"timeout":0})", &u).ok());
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(u.retry_delay()), 5000);
  EXPECT_TRUE(u.has_timeout());
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(u.timeout()), 0);
}

TEST(JsonMillisTest, OnlyTopLevelNumbersAreRewritten) {
  const std::vector<std::string> keys = {"retryDelay", "timeout"};
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {R"({"retryDelay": 1, "timeout" :250})", R"({"retryDelay": "0.001s", "timeout" :"0.250s"})"},
      {R"({"timeout":315576000000000})", R"({"timeout":"315576000000.000s"})"},
      {R"({"timeout":"5s"})", R"({"timeout":"5s"})"},
      // Nested values, key-like text in strings, other keys: untouched.
      {R"({"d":"\"timeout\":-1 {[","x":{"timeout":5,"y":[{"timeout":6}]},"timeout":7})",
       R"({"d":"\"timeout\":-1 {[","x":{"timeout":5,"y":[{"timeout":6}]},"timeout":"0.007s"})"},
      {R"({"retryAttempts":3,"url":"u"})", R"({"retryAttempts":3,"url":"u"})"},
      {R"([{"timeout":5}])", R"([{"timeout":5}])"},
      {R"({"timeout":[5]})", R"({"timeout":[5]})"},
      // Malformed: rewritten up to where the scan stops, the rest copied.
      {R"({"timeout":5,)", R"({"timeout":"0.005s",)"},
      {R"({"timeout":5 "retryDelay":6})", R"({"timeout":"0.005s" "retryDelay":6})"},
      {R"({"timeout")", R"({"timeout")"},
      {R"({"a":"unterminated)", R"({"a":"unterminated)"},
      {"", ""},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> out = MillisToDurationStrings(c.in, keys);
    ASSERT_TRUE(out.ok()) << c.in << ": " << out.status();
    EXPECT_EQ(*out, c.out) << c.in;
  }
}

TEST(JsonMillisTest, BadNumbersNameTheField) {
  for (const char* bad : {"-1", "-0.5", "5000.5", "1e300", "-1e300", "315576000000001", "NaN",
                          "Infinity", "-Infinity", "true", "5000x", "+5", "05", "1.", "0x10"}) {
    v1::UpdateWebhookRequest u;
    absl::Status s = JsonToProtoWithMillis(absl::StrCat(R"({"retryDelay":)", bad, "}"), &u);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StartsWith(s.message(), "retryDelay: must be a whole number of milliseconds"))
        << bad << ": " << s;
    s = JsonToProtoWithMillis(absl::StrCat(R"({"url":"x","timeout":)", bad, "}"), &u);
    EXPECT_TRUE(absl::StartsWith(s.message(), "timeout: ")) << bad << ": " << s;
  }
  v1::RegisterWebhookRequest r;
  absl::Status s = JsonToProtoWithMillis(R"({"retry_delay":-5})", &r);
  EXPECT_TRUE(absl::StartsWith(s.message(), "retry_delay: ")) << s;
}

// A broker that never delivers. While HoldStops is on, a subscription's Stop
// waits for `release_stop` (a subscription thread slow to join).
}  // namespace
}  // namespace switchboard::webhooks
