#ifndef SWITCHBOARD_TESTS_TESTING_STORE_BACKENDS_H_
#define SWITCHBOARD_TESTS_TESTING_STORE_BACKENDS_H_

// What every store conformance suite is parameterised over: the embedded
// store, Redis, a Redis Cluster and the in-memory fake, with the real
// servers started once per test process, when a test first needs them.
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "libs/redis/redis_config.h"
#include "libs/redis/redis_metrics.h"
#include "prometheus/registry.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

namespace switchboard::testing {

enum class Backend { kSqlite, kRedis, kRedisCluster, kMemory };

inline std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::kSqlite:
      return "Sqlite";
    case Backend::kRedis:
      return "Redis";
    case Backend::kRedisCluster:
      return "RedisCluster";
    case Backend::kMemory:
      return "Memory";
  }
  return "Unknown";
}

inline const auto kAllBackends =
    ::testing::Values(Backend::kSqlite, Backend::kRedis, Backend::kRedisCluster, Backend::kMemory);

// Servers shared by every test of a suite; each test has its own data (a
// directory, or a key prefix). CTest runs each test in its own process, so
// only the server a test needs is started.
struct BackendServers {
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<RedisCluster> cluster;
  prometheus::Registry registry;
  redis::RedisMetrics metrics{registry, "test"};

  // Starts the server `backend` needs (none for the embedded and memory
  // stores); a failure is a test failure.
  void Ensure(Backend backend) {
    if (backend == Backend::kRedis && !redis) {
      absl::StatusOr<std::unique_ptr<RedisServer>> r = RedisServer::Start();
      ASSERT_TRUE(r.ok()) << r.status();
      redis = *std::move(r);
    }
    if (backend == Backend::kRedisCluster && !cluster) {
      absl::StatusOr<std::unique_ptr<RedisCluster>> c = RedisCluster::Start(3, 0);
      ASSERT_TRUE(c.ok()) << c.status();
      cluster = *std::move(c);
    }
  }

  // The Redis configuration of `backend` (kRedis or kRedisCluster).
  redis::RedisConfig Config(Backend backend) {
    std::string url = backend == Backend::kRedis ? redis->url() : cluster->url();
    absl::StatusOr<redis::RedisConfig> cfg = redis::ParseRedisUrl(url, "store");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    return cfg.ok() ? *cfg : redis::RedisConfig();
  }
};

// The base of a conformance suite: the servers, started once per test
// process, and for each test a directory and a key prefix of its own.
class StoreConformanceTest : public ::testing::TestWithParam<Backend> {
 public:
  static void SetUpTestSuite() { servers_ = new BackendServers; }
  static void TearDownTestSuite() {
    delete servers_;
    servers_ = nullptr;
  }

 protected:
  void SetUp() override {
    dir_ = MakeTempDir();
    static int n = 0;
    prefix_ = absl::StrCat("t", ++n, "-", getpid());
    servers_->Ensure(GetParam());
  }

  // A Redis configuration of this test's backend (kRedis or kRedisCluster).
  redis::RedisConfig RedisConfigOf() { return servers_->Config(GetParam()); }
  redis::RedisMetrics* redis_metrics() { return &servers_->metrics; }

  static inline BackendServers* servers_ = nullptr;
  std::string dir_;
  std::string prefix_;
};

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_TESTING_STORE_BACKENDS_H_
