// The SSRF guard: address classes, URL rules, and the policy table (each
// class of target with and without each switch, in every spelling a host can
// take).
#include "services/webhook_delivery/target_guard.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchboard::webhooks {
namespace {

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
           {"169.254.1.1", AddressClass::kLinkLocal},
           {"169.254.169.254", AddressClass::kMetadata},
           {"169.254.170.2", AddressClass::kMetadata},
           {"100.100.100.200", AddressClass::kMetadata},
           {"fd00:ec2::254", AddressClass::kMetadata},
           {"::ffff:169.254.169.254", AddressClass::kMetadata},
           {"64:ff9b::a9fe:a9fe", AddressClass::kMetadata},
           {"::169.254.169.254", AddressClass::kMetadata},
           {"0.0.0.0", AddressClass::kUnspecified},
           {"224.0.0.1", AddressClass::kMulticast},
           {"255.255.255.255", AddressClass::kReserved},
           {"::1", AddressClass::kLoopback},
           {"::", AddressClass::kUnspecified},
           {"fc00::1", AddressClass::kUniqueLocal},
           {"fd12:3456::1", AddressClass::kUniqueLocal},
           {"fd00:ec2::253", AddressClass::kUniqueLocal},
           {"fe80::1", AddressClass::kLinkLocal},
           {"fe80::1%eth0", AddressClass::kLinkLocal},
           {"ff02::1", AddressClass::kMulticast},
           {"::ffff:127.0.0.1", AddressClass::kLoopback},
           {"::ffff:7f00:1", AddressClass::kLoopback},
           {"::ffff:10.0.0.1", AddressClass::kPrivate},
           {"::ffff:0:127.0.0.1", AddressClass::kLoopback},
           {"::ffff:0:a9fe:a9fe", AddressClass::kMetadata},
           {"2002:7f00:1::", AddressClass::kLoopback},
           {"2002:a9fe:a9fe::1", AddressClass::kMetadata},
           {"2002:808:808::1", AddressClass::kPublic},
           {"64:ff9b:1::a9fe:a9fe", AddressClass::kLocalNat64},
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

TEST(TargetGuardTest, UserInfoIsRefusedAndNeverEchoed) {
  for (const char* url :
       {"http://user:hunter2@hooks.example.com/x", "http://user@hooks.example.com/",
        "https://:hunter2@hooks.example.com/", "http://@hooks.example.com/"}) {
    auto r = ParseWebhookUrl(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), ::testing::HasSubstr("user-info")) << url;
    EXPECT_THAT(r.status().message(), ::testing::Not(::testing::HasSubstr("hunter2")));
  }
  // An '@' in the path or query is not user-info.
  EXPECT_TRUE(ParseWebhookUrl("https://hooks.example.com/to/a@b?c=d@e").ok());
}

TEST(TargetGuardTest, CidrParsing) {
  for (const char* good : {"10.0.0.0/8", "192.168.1.7", "0.0.0.0/0", "fd12::/16", "::1/128"}) {
    EXPECT_TRUE(ParseCidr(good).ok()) << good;
  }
  for (const char* bad : {"", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/x", "fd12::/129",
                          "example.com/8", "10.0.0/8", "10.0.0.0/"}) {
    EXPECT_FALSE(ParseCidr(bad).ok()) << bad;
  }
  auto p = MakeTargetPolicy(false, "10.0.0.0/8, fd12::/16");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->allow.size(), 2u);
  auto bad = MakeTargetPolicy(false, "10.0.0.0/8,nope");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "allow_targets: ")) << bad.status();
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("nope"));
}

// Each class of target, in each spelling, under each policy: no switch,
// --allow_private_targets, --allow_targets=10.0.0.0/8,fd12::/16, and both.
TEST(TargetGuardTest, PolicyTable) {
  // Names resolve through this table, as DNS would.
  auto dns = [](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
    if (host == "public.example") return std::vector<std::string>{"93.184.216.34"};
    if (host == "incluster.example") return std::vector<std::string>{"10.4.5.6"};
    if (host == "metadata.google.internal") return std::vector<std::string>{"169.254.169.254"};
    if (host == "rebind.example") return std::vector<std::string>{"93.184.216.34", "127.0.0.1"};
    if (host == "lb.example") return std::vector<std::string>{"93.184.216.34", "10.9.9.9"};
    return absl::UnavailableError("no such host");
  };
  const TargetPolicy none;
  TargetPolicy priv;
  priv.allow_private = true;
  auto listed = MakeTargetPolicy(false, "10.0.0.0/8,fd12::/16");
  ASSERT_TRUE(listed.ok());
  auto both = MakeTargetPolicy(true, "10.0.0.0/8,fd12::/16");
  ASSERT_TRUE(both.ok());
  struct Case {
    const char* url;
    bool none, priv, listed, both;  // allowed under each policy
  };
  const std::vector<Case> cases = {
      // public
      {"https://public.example/x", true, true, true, true},
      {"http://93.184.216.34/x", true, true, true, true},
      {"http://[2606:4700:4700::1111]/x", true, true, true, true},
      // loopback in every spelling
      {"http://127.0.0.1/x", false, true, false, true},
      {"http://127.1/x", false, true, false, true},
      {"http://0x7f000001/x", false, true, false, true},
      {"http://2130706433/x", false, true, false, true},
      {"http://0177.0.0.1/x", false, true, false, true},
      {"http://[::1]/x", false, true, false, true},
      {"http://[::ffff:127.0.0.1]/x", false, true, false, true},
      {"http://[::ffff:7f00:1]/x", false, true, false, true},
      {"http://localhost/x", false, true, false, true},
      {"http://localhost./x", false, true, false, true},
      {"http://LOCALHOST/x", false, true, false, true},
      {"http://api.localhost/x", false, true, false, true},
      // a private range, by address, by name, and mapped
      {"http://10.1.2.3/x", false, true, true, true},
      {"http://incluster.example/x", false, true, true, true},
      {"http://[::ffff:10.1.2.3]/x", false, true, true, true},
      {"http://[64:ff9b::a01:203]/x", false, true, true, true},
      {"http://192.168.1.1/x", false, true, false, true},
      {"http://[fd12::5]/x", false, true, true, true},
      {"http://[fd99::5]/x", false, true, false, true},
      // a name with a public and a private address is judged by the worst
      {"http://rebind.example/x", false, true, false, true},
      {"http://lb.example/x", false, true, true, true},
      // link-local and CGNAT
      {"http://169.254.1.1/x", false, true, false, true},
      {"http://100.64.0.1/x", false, true, false, true},
      // not private, not allowed by --allow_private_targets either
      {"http://0.0.0.0/x", false, false, false, false},
      {"http://224.0.0.1/x", false, false, false, false},
      // cloud metadata: never, in any spelling
      {"http://169.254.169.254/latest/meta-data/", false, false, false, false},
      {"http://0xa9fea9fe/", false, false, false, false},
      {"http://2852039166/", false, false, false, false},
      {"http://[::ffff:169.254.169.254]/", false, false, false, false},
      {"http://[::ffff:a9fe:a9fe]/", false, false, false, false},
      {"http://[64:ff9b::a9fe:a9fe]/", false, false, false, false},
      {"http://[2002:a9fe:a9fe::1]/", false, false, false, false},
      {"http://[::ffff:0:a9fe:a9fe]/", false, false, false, false},
      {"http://[64:ff9b:1::a9fe:a9fe]/", false, false, false, false},
      {"http://[2002:7f00:1::1]/", false, true, false, true},
      {"http://[fd00:ec2::254]/", false, false, false, false},
      {"http://100.100.100.200/", false, false, false, false},
      {"http://169.254.170.2/v2/credentials", false, false, false, false},
      {"http://metadata.google.internal/computeMetadata/v1/", false, false, false, false},
  };
  auto everything = MakeTargetPolicy(true, "0.0.0.0/0,::/0");
  ASSERT_TRUE(everything.ok());
  for (const Case& c : cases) {
    auto url = ParseWebhookUrl(c.url);
    ASSERT_TRUE(url.ok()) << c.url << ": " << url.status();
    const std::pair<const TargetPolicy*, bool> policies[] = {
        {&none, c.none}, {&priv, c.priv}, {&*listed, c.listed}, {&*both, c.both}};
    int i = 0;
    for (const auto& [policy, want] : policies) {
      auto r = VetTarget(*url, *policy, dns);
      EXPECT_EQ(r.ok(), want) << c.url << " under policy " << i << ": " << r.status();
      if (!r.ok()) {
        EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.url;
        EXPECT_TRUE(absl::StartsWith(r.status().message(), "url: ")) << r.status();
      }
      ++i;
    }
    // Allowing every range still refuses metadata.
    bool metadata =
        absl::StrContains(c.url, "169.254.169.254") || absl::StrContains(c.url, "64:ff9b:1::") ||
        absl::StrContains(c.url, "a9fe") || absl::StrContains(c.url, "ec2") ||
        absl::StrContains(c.url, "100.100.100.200") || absl::StrContains(c.url, "170.2") ||
        absl::StrContains(c.url, "metadata") || absl::StrContains(c.url, "2852039166");
    auto r = VetTarget(*url, *everything, dns);
    EXPECT_EQ(r.ok(), !metadata) << c.url << ": " << r.status();
    if (metadata) EXPECT_THAT(r.status().message(), ::testing::HasSubstr("refused always"));
  }
}

TEST(TargetGuardTest, PinsTheVettedAddressAndNamesTheSwitches) {
  auto url = ParseWebhookUrl("https://hooks.example.com/in");
  ASSERT_TRUE(url.ok());
  auto public_dns = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"93.184.216.34"};
  };
  auto t = VetTarget(*url, TargetPolicy{}, public_dns);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->curl_resolve, "hooks.example.com:443:93.184.216.34");

  auto mixed = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return std::vector<std::string>{"93.184.216.34", "10.0.0.5"};
  };
  t = VetTarget(*url, TargetPolicy{}, mixed);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("10.0.0.5"));
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("--allow_targets"));
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("--allow_private_targets"));

  auto dead = [](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    return absl::UnavailableError("cannot resolve");
  };
  EXPECT_EQ(VetTarget(*url, TargetPolicy{}, dead).status().code(), absl::StatusCode::kUnavailable);

  // A real name that resolves to loopback through the system resolver.
  auto localhost = ParseWebhookUrl("http://localhost:8080/hook");
  ASSERT_TRUE(localhost.ok());
  TargetPolicy priv;
  priv.allow_private = true;
  auto allowed = VetTarget(*localhost, priv);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(allowed->curl_resolve, "localhost:8080:127.0.0.1");
  auto v6 = ParseWebhookUrl("http://[::1]:8080/hook");
  ASSERT_TRUE(v6.ok());
  allowed = VetTarget(*v6, priv);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(allowed->address, "::1");
}

}  // namespace
}  // namespace switchboard::webhooks
