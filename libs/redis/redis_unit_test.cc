#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/redis/redis_client.h"
#include "libs/redis/redis_config.h"

namespace switchboard::redis {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RedisUrlTest, StandaloneWithAndWithoutCredentials) {
  absl::StatusOr<RedisConfig> c = ParseRedisUrl("redis://cache.internal:6380", "store");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->cluster);
  ASSERT_EQ(c->seeds.size(), 1u);
  EXPECT_EQ(c->seeds[0].host, "cache.internal");
  EXPECT_EQ(c->seeds[0].port, 6380);
  EXPECT_TRUE(c->password.empty());

  c = ParseRedisUrl("redis://app:s%40cr%3At@10.0.0.1:6379/2", "store");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->user, "app");
  EXPECT_EQ(c->password, "s@cr:t");
  EXPECT_EQ(c->db, 2);
  EXPECT_EQ(c->Redacted(), "redis://app:***@10.0.0.1:6379/2");
  EXPECT_THAT(c->Redacted(), Not(HasSubstr("cr")));

  c = ParseRedisUrl("redis://:only-password@localhost", "store");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->user, "");
  EXPECT_EQ(c->password, "only-password");
  EXPECT_EQ(c->seeds[0].port, 6379);
}

TEST(RedisUrlTest, ClusterSeeds) {
  absl::StatusOr<RedisConfig> c =
      ParseRedisUrl("redis-cluster://a:7000,b:7001,[::1]:7002", "store");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->cluster);
  ASSERT_EQ(c->seeds.size(), 3u);
  EXPECT_EQ(c->seeds[1].ToString(), "b:7001");
  EXPECT_EQ(c->seeds[2].host, "::1");
  EXPECT_EQ(c->seeds[2].ToString(), "[::1]:7002");
}

TEST(RedisUrlTest, BadUrlsNameTheFlagAndHideThePassword) {
  for (const char* bad : {"http://x:1", "redis://", "redis://host:0", "redis://host:99999",
                          "redis://host:abc", "redis://a:1,b:2", "redis-cluster://a:1/3",
                          "redis://u:hunter2@host:x", "rediss://host:6379", "redis://u:%zz@host"}) {
    absl::StatusOr<RedisConfig> c = ParseRedisUrl(bad, "store");
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(c.status())) << bad;
    EXPECT_THAT(c.status().message(), HasSubstr("store:")) << bad;
    EXPECT_THAT(c.status().message(), Not(HasSubstr("hunter2"))) << bad;
  }
}

TEST(KeySlotTest, MatchesRedisClusterSpec) {
  // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
  EXPECT_EQ(KeySlot("123456789"), 12739);
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("bar"), 5061);
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("{user1000}.followers"));
  EXPECT_EQ(KeySlot("{switchboard}:log"), KeySlot("switchboard"));
  // An empty tag does not count: the whole key is hashed.
  EXPECT_EQ(KeySlot("foo{}{bar}"), KeySlot("foo{}{bar}"));
  EXPECT_NE(KeySlot("foo{}{bar}"), KeySlot("bar"));
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), KeySlot("{bar"));
}

TEST(ScriptTest, EvalShaCarriesKeysThenArgs) {
  Script s("return 1");
  EXPECT_EQ(s.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
  Command c = s.Call({"k1", "k2"}, {"a"});
  EXPECT_THAT(c, ::testing::ElementsAre("EVALSHA", s.sha1(), "2", "k1", "k2", "a"));
}

}  // namespace
}  // namespace switchboard::redis
