// Signing against the Standard Webhooks reference vectors, secrets, receiver
// verification, and the SSRF guard's address and URL tables.
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/webhook_delivery/signing.h"
#include "services/webhook_delivery/target_guard.h"

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
  for (const char* bad : {"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!not base64!!!",
                          "whsec_c2hvcnQ=" /* "short" */}) {
    auto key = DecodeSecret(bad);
    ASSERT_FALSE(key.ok()) << bad;
    EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(key.status().message(), "secret: ")) << key.status();
  }
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

}  // namespace
}  // namespace switchboard::webhooks
