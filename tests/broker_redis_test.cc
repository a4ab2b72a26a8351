// The event-broker on Redis, as an operator meets it: configuration mistakes
// refused at start naming the flag, and a Redis that goes away and comes
// back (publishes fail fast, readiness follows, everything acked survives).
#include <fstream>

#include "tests/broker_it_util.h"

namespace switchboard::broker_it {
namespace {

using ::testing::HasSubstr;
using testing::RedisOptions;
using testing::RedisServer;
using testing::RunToExit;

TEST(BrokerRedisConfigTest, BadConfigurationExitsTwoNamingTheFlag) {
  RedisOptions opts;
  opts.password = "right-password";
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start(opts);
  ASSERT_TRUE(redis.ok()) << redis.status();
  std::string addr = (*redis)->addr();
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  std::string pw_file = testing::MakeTempDir() + "/pw";
  { std::ofstream(pw_file) << "wrong-password\n"; }
  std::vector<Case> cases = {
      {{"--store=redis://"}, "store: no host"},
      {{"--store=redis://" + addr + ":x"}, "store: port"},
      {{"--store=mongodb://" + addr}, "store: 'mongodb://"},
      {{"--store=postgres"}, "store: 'postgres'"},
      {{"--store=redis://" + addr, "--redis_prefix=bad{prefix}"}, "redis_prefix"},
      {{"--store=redis://" + addr, "--sync=full"}, "sync: 'full'"},
      {{"--store=redis://" + addr, "--sync=replicated", "--redis_min_replicas=0"},
       "redis_min_replicas"},
      {{"--store=redis://" + addr, "--redis_password_file=/no/such/file"}, "redis_password_file"},
      {{"--store=redis://:not-it@" + addr}, "store: redis " + addr + ": authentication failed"},
      {{"--store=redis://" + addr, "--redis_password_file=" + pw_file}, "authentication failed"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"--grpc_addr=127.0.0.1:0", "--http_addr=127.0.0.1:0",
                                     "--data_dir=" + testing::MakeTempDir()};
    args.insert(args.end(), c.args.begin(), c.args.end());
    testing::ExitResult r = RunToExit(BROKER_BIN, args, absl::Seconds(20));
    EXPECT_EQ(r.code, 2) << c.args.back() << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.says)) << c.args.back();
    EXPECT_THAT(r.output, ::testing::Not(HasSubstr("wrong-password")));
    EXPECT_THAT(r.output, ::testing::Not(HasSubstr("not-it")));
  }
  // The right password, from the file, works; the URL is logged without it.
  { std::ofstream(pw_file) << "right-password\n"; }
  auto ok = testing::ServiceProcess::Start(
      BROKER_BIN, {"--store=redis://" + addr, "--redis_password_file=" + pw_file});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT((*ok)->Log(), ::testing::Not(HasSubstr("right-password")));
  auto stub = Connect(**ok);
  broker::v1::PublishResponse resp;
  EXPECT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
}

TEST(BrokerRedisOutageTest, PublishesFailFastWhileRedisIsDownAndResumeAfter) {
  RedisOptions opts;
  opts.appendfsync = "always";
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start(opts);
  ASSERT_TRUE(redis.ok()) << redis.status();
  auto broker = testing::ServiceProcess::Start(
      BROKER_BIN, {"--store=" + (*redis)->url(), "--redis_timeout=2s"});
  ASSERT_TRUE(broker.ok()) << broker.status();
  auto stub = Connect(**broker);
  std::set<uint64_t> acked;
  for (int i = 0; i < 20; ++i) {
    broker::v1::PublishResponse resp;
    ASSERT_TRUE(
        Publish(stub.get(), MakeEvent("order.created", absl::StrCat("before-", i)), &resp).ok());
    acked.insert(resp.sequence());
  }
  EXPECT_EQ(HttpRequest((*broker)->http_addr(), "GET", "/readyz").status, 200);

  (*redis)->Kill9();
  absl::Time t0 = absl::Now();
  broker::v1::PublishResponse resp;
  grpc::Status down = Publish(stub.get(), MakeEvent("order.created", "during"), &resp);
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3)) << "a publish must fail fast, not hang";
  EXPECT_TRUE(
      WaitUntil([&] { return HttpRequest((*broker)->http_addr(), "GET", "/readyz").status == 503; },
                absl::Seconds(10)))
      << "readiness must follow the store";

  ASSERT_TRUE((*redis)->Restart().ok());
  EXPECT_TRUE(
      WaitUntil([&] { return HttpRequest((*broker)->http_addr(), "GET", "/readyz").status == 200; },
                absl::Seconds(10)));
  bool published = WaitUntil(
      [&] { return Publish(stub.get(), MakeEvent("order.created", "after"), &resp).ok(); },
      absl::Seconds(10), absl::Milliseconds(100));
  ASSERT_TRUE(published);
  EXPECT_GT(resp.sequence(), *acked.rbegin()) << "sequences are never reused";
  std::set<uint64_t> stored;
  for (const auto& ev : AllEvents(stub.get())) stored.insert(ev.sequence());
  for (uint64_t s : acked) EXPECT_TRUE(stored.count(s)) << "acked event " << s << " lost";
}

}  // namespace
}  // namespace switchboard::broker_it
