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

TEST(TargetGuardTest, AddressTable) {
  struct Case {
    const char* ip;
    AddressClass want;
  };
  for (const Case& c : std::vector<Case>{
           {"127.0.0.1", AddressClass::kLoopback},
           {"127.8.9.10", AddressClass::kLoopback},
           {"10.1.2.3", AddressClass::kPrivate},
           {"172.16.0.1", AddressClass::kPrivate},
           {"172.31.255.255", AddressClass::kPrivate},
           {"192.168.1.1", AddressClass::kPrivate},
           {"100.64.0.1", AddressClass::kSharedCgnat},
           {"100.127.255.254", AddressClass::kSharedCgnat},
           {"169.254.169.254", AddressClass::kLinkLocal},
           {"0.0.0.0", AddressClass::kUnspecified},
           {"224.0.0.1", AddressClass::kMulticast},
           {"255.255.255.255", AddressClass::kReserved},
           {"::1", AddressClass::kLoopback},
           {"::", AddressClass::kUnspecified},
           {"fc00::1", AddressClass::kUniqueLocal},
           {"fd12:3456::1", AddressClass::kUniqueLocal},
           {"fe80::1", AddressClass::kLinkLocal},
           {"ff02::1", AddressClass::kMulticast},
           {"::ffff:127.0.0.1", AddressClass::kLoopback},
           {"::ffff:10.0.0.1", AddressClass::kPrivate},
           {"::ffff:169.254.169.254", AddressClass::kLinkLocal},
           {"64:ff9b::a9fe:a9fe", AddressClass::kLinkLocal},
           {"8.8.8.8", AddressClass::kPublic},
           {"172.32.0.1", AddressClass::kPublic},
           {"100.128.0.1", AddressClass::kPublic},
           {"2606:4700:4700::1111", AddressClass::kPublic},
           {"::ffff:8.8.8.8", AddressClass::kPublic},
       }) {
    auto got = ClassifyAddress(c.ip);
    ASSERT_TRUE(got.ok()) << c.ip;
    EXPECT_EQ(*got, c.want) << c.ip << " is " << AddressClassName(*got);
  }
  EXPECT_FALSE(ClassifyAddress("example.com").ok());
}

TEST(TargetGuardTest, UrlTable) {
  auto ok = ParseWebhookUrl("https://hooks.example.com/path?x=1");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->scheme, "https");
  EXPECT_EQ(ok->host, "hooks.example.com");
  EXPECT_EQ(ok->port, 443);
  auto v6 = ParseWebhookUrl("http://[2606:4700:4700::1111]:8080/h");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "2606:4700:4700::1111");
  EXPECT_EQ(v6->port, 8080);
  for (const char* bad : {"", "ftp://example.com/x", "file:///etc/passwd", "gopher://x",
                          "not a url", "http://", "http://exa mple.com/"}) {
    auto r = ParseWebhookUrl(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(r.status().message(), "url: ")) << r.status();
  }
}

TEST(TargetGuardTest, RefusesPrivateTargetsAndPinsTheVettedAddress) {
  auto url = ParseWebhookUrl("https://hooks.example.com/in");
  ASSERT_TRUE(url.ok());
  auto public_dns = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"93.184.216.34"};
  };
  auto t = VetTarget(*url, false, public_dns);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->curl_resolve, "hooks.example.com:443:93.184.216.34");

  // One private address among public ones is enough to refuse.
  auto mixed = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"93.184.216.34", "10.0.0.5"};
  };
  t = VetTarget(*url, false, mixed);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("10.0.0.5"));
  EXPECT_TRUE(VetTarget(*url, /*allow_private=*/true, mixed).ok());

  for (const char* literal :
       {"http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x", "http://100.64.1.1/x", "http://[fd00::1]/x"}) {
    auto u = ParseWebhookUrl(literal);
    ASSERT_TRUE(u.ok()) << literal;
    auto r = VetTarget(*u, false);
    ASSERT_FALSE(r.ok()) << literal;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // A real name that resolves to loopback (the system resolver, /etc/hosts).
  auto localhost = ParseWebhookUrl("http://localhost:8080/hook");
  ASSERT_TRUE(localhost.ok());
  auto r = VetTarget(*localhost, false);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), ::testing::HasSubstr("loopback"));
  auto allowed = VetTarget(*localhost, true);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_TRUE(absl::StartsWith(allowed->curl_resolve, "localhost:8080:"));
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
    config.allow_private_targets = allow_private;
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
  absl::Status Put(const WebhookRecord& record) override {
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

  bool fail_writes = false;

 private:
  WebhookStore* const real_;
};

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
