#include "libs/common/auth.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchboard {
namespace {

Principal With(std::vector<std::string> scopes) {
  Principal p;
  p.name = "p";
  for (const std::string& s : scopes) {
    auto parsed = ParseScope(s);
    EXPECT_TRUE(parsed.ok()) << s << ": " << parsed.status();
    p.scopes.push_back(*parsed);
  }
  return p;
}

TEST(ScopeTest, ParsesTheSpecsScopesAndRefusesOthers) {
  for (const char* good : {"admin", "jobs:read", "jobs:admin", "webhooks:read", "webhooks:admin",
                           "publish:order.*", "publish:*", "publish:order.created",
                           "subscribe:order.*", "subscribe:order.*@billing", "subscribe:*@x"}) {
    EXPECT_TRUE(ParseScope(good).ok()) << good;
  }
  for (const char* bad : {"", "root", "jobs:write", "publish:", "publish:Order",
                          "subscribe:order.*@", "subscribe:order*", "publish:order.**"}) {
    EXPECT_FALSE(ParseScope(bad).ok()) << bad;
  }
}

TEST(ScopeTest, PatternsCoverAsSubscriptionFiltersMatch) {
  Principal p =
      With({"publish:order.*", "subscribe:order.payment.*", "subscribe:user.created@crm"});
  EXPECT_TRUE(RequirePublish(p, "order.created").ok());
  EXPECT_TRUE(RequirePublish(p, "order.payment.completed").ok());
  EXPECT_FALSE(RequirePublish(p, "orders.created").ok());
  EXPECT_FALSE(RequirePublish(p, "user.created").ok());
  EXPECT_TRUE(RequireSubscribe(p, {"order.payment.*"}, "").ok());
  EXPECT_TRUE(RequireSubscribe(p, {"order.payment.failed"}, "any").ok());
  EXPECT_FALSE(RequireSubscribe(p, {"order.*"}, "").ok()) << "wider than the scope";
  EXPECT_FALSE(RequireSubscribe(p, {}, "").ok()) << "empty means every type";
  EXPECT_TRUE(RequireSubscribe(p, {"user.created"}, "crm").ok());
  auto denied = RequireSubscribe(p, {"user.created"}, "billing");
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.message(), ::testing::HasSubstr("'subscribe:user.created@billing'"));
  EXPECT_TRUE(RequireGroup(p, "crm").ok());
  EXPECT_TRUE(RequireGroup(p, "anything").ok()) << "an unrestricted subscribe scope";
  EXPECT_TRUE(MaySee(p, "order.payment.completed"));
  EXPECT_TRUE(MaySee(p, "user.created"));
  EXPECT_FALSE(MaySee(p, "order.created"));
  Principal crm = With({"subscribe:*@crm"});
  EXPECT_FALSE(RequireGroup(crm, "billing").ok());
  EXPECT_TRUE(RequireSubscribe(crm, {}, "crm").ok());
}

TEST(ScopeTest, AdminScopesImplyTheirReadsAndAdminImpliesAll) {
  EXPECT_TRUE(RequireScope(With({"jobs:admin"}), Scope::kJobsRead).ok());
  EXPECT_FALSE(RequireScope(With({"jobs:read"}), Scope::kJobsAdmin).ok());
  EXPECT_TRUE(RequireScope(With({"webhooks:admin"}), Scope::kWebhooksRead).ok());
  EXPECT_FALSE(RequireScope(With({"webhooks:admin"}), Scope::kJobsRead).ok());
  Principal root = With({"admin"});
  EXPECT_TRUE(RequireScope(root, Scope::kJobsAdmin).ok());
  EXPECT_TRUE(RequirePublish(root, "anything.at_all").ok());
  EXPECT_TRUE(RequireSubscribe(root, {}, "g").ok());
}

TEST(AuthenticatorTest, BearerTokensAndIdentitiesMapToPrincipals) {
  std::string path = ::testing::TempDir() + "/tokens.jsonl";
  std::ofstream(path) << R"({"principal":"a","token_sha256":")" << Sha256Hex("secret-a")
                      << R"(","scopes":["jobs:read"]})"
                      << "\n"
                      << R"({"principal":"w","tls_identity":"spiffe://x/w","scopes":["admin"]})"
                      << "\n";
  auto auth = Authenticator::Open(path, nullptr);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->Authenticate({"Bearer secret-a", {}}, "m")->name, "a");
  EXPECT_EQ((*auth)->Authenticate({"bearer   secret-a ", {}}, "m")->name, "a");
  EXPECT_EQ((*auth)->Authenticate({"Bearer wrong", {}}, "m").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate({"Basic c2VjcmV0", {}}, "m").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate({"", {}}, "m").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate({"", {"cn", "spiffe://x/w"}}, "m")->name, "w");
  // A presented token that is wrong is refused even with a mapped identity.
  EXPECT_FALSE((*auth)->Authenticate({"Bearer wrong", {"spiffe://x/w"}}, "m").ok());
  Authenticator off;
  EXPECT_TRUE(off.Authenticate({}, "m")->anonymous);
}

}  // namespace
}  // namespace switchboard
