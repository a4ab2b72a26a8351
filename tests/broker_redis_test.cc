// The event-broker on Redis, as an operator meets it: configuration mistakes
// refused at start naming the flag, and a Redis that goes away and comes
// back (publishes fail fast, readiness follows, everything acked survives).
#include <fstream>
#include <optional>

#include "grpc/health/v1/health.grpc.pb.h"
#include "libs/broker_client/broker_client.h"
#include "tests/broker_it_util.h"

namespace switchboard::broker_it {
namespace {

using ::testing::HasSubstr;
using testing::RedisOptions;
using testing::RedisServer;
using testing::RunToExit;

double MetricValue(const testing::ServiceProcess& p, const std::string& series) {
  return testing::MetricValue(p.http_addr(), series);
}

// A redis-server with appendfsync always (an acked write is on disk) and a
// broker on it with a short store timeout.
struct DurableRedisAndBroker {
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<testing::ServiceProcess> broker;
  static std::optional<DurableRedisAndBroker> Start() {
    RedisOptions opts;
    opts.appendfsync = "always";
    absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start(opts);
    EXPECT_TRUE(redis.ok()) << redis.status();
    if (!redis.ok()) return std::nullopt;
    auto broker = testing::ServiceProcess::Start(
        BROKER_BIN, {"--store=" + (*redis)->url(), "--redis_timeout=2s"});
    EXPECT_TRUE(broker.ok()) << broker.status();
    if (!broker.ok()) return std::nullopt;
    return DurableRedisAndBroker{*std::move(redis), *std::move(broker)};
  }
};

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
      {{"--store=redis:/u:not-it@" + addr}, "store: '' is not"},
      {{"--store=mongodb://u:not-it@" + addr}, "store: 'mongodb://'"},
      {{"--store=redis://" + addr, "--redis_prefix=bad{prefix}"}, "redis_prefix"},
      {{"--store=redis://" + addr, "--sync=full"}, "sync: 'full'"},
      {{"--store=redis://" + addr, "--sync=replicated", "--redis_min_replicas=0"},
       "redis_min_replicas"},
      {{"--store=redis://" + addr, "--redis_password_file=/no/such/file"}, "redis_password_file"},
      {{"--store=redis://:not-it@" + addr}, "store: redis " + addr + ": authentication failed"},
      {{"--store=redis://" + addr, "--redis_password_file=" + pw_file}, "authentication failed"},
      {{"--store=redis://" + addr}, "store: redis: authentication needed"},
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
  // A log written before the entry layout had a version (fields ty in tm pl)
  // is refused, not served with empty payloads.
  ASSERT_TRUE((*redis)
                  ->Cli({"XADD", "{old}:log", "1-0", "ty", "order.created", "in", "1", "pl", "x"})
                  .ok());
  {
    { std::ofstream(pw_file) << "right-password\n"; }
    testing::ExitResult r =
        RunToExit(BROKER_BIN,
                  {"--grpc_addr=127.0.0.1:0", "--http_addr=127.0.0.1:0",
                   "--data_dir=" + testing::MakeTempDir(), "--store=redis://" + addr,
                   "--redis_password_file=" + pw_file, "--redis_prefix=old"},
                  absl::Seconds(20));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_THAT(r.output, HasSubstr("written by an earlier build"));
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
  std::optional<DurableRedisAndBroker> env = DurableRedisAndBroker::Start();
  ASSERT_TRUE(env.has_value());
  RedisServer& redis = *env->redis;
  testing::ServiceProcess& broker = *env->broker;
  auto stub = Connect(broker);
  std::set<uint64_t> acked;
  for (int i = 0; i < 20; ++i) {
    broker::v1::PublishResponse resp;
    ASSERT_TRUE(
        Publish(stub.get(), MakeEvent("order.created", absl::StrCat("before-", i)), &resp).ok());
    acked.insert(resp.sequence());
  }
  EXPECT_EQ(HttpRequest(broker.http_addr(), "GET", "/readyz").status, 200);
  SubscribeRequest all;
  all.set_start(SubscribeRequest::EARLIEST);
  Collector broadcast(stub.get(), all);
  Collector member(stub.get(), GroupReq("outage"), [](const Delivery&) { return true; });
  ASSERT_TRUE(broadcast.WaitForCount(20));
  ASSERT_TRUE(member.WaitForCount(20));

  redis.Kill9();
  absl::Time t0 = absl::Now();
  broker::v1::PublishResponse resp;
  grpc::Status down = Publish(stub.get(), MakeEvent("order.created", "during"), &resp);
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5)) << "a publish must fail fast, not hang";
  EXPECT_TRUE(
      WaitUntil([&] { return HttpRequest(broker.http_addr(), "GET", "/readyz").status == 503; },
                absl::Seconds(10)))
      << "readiness must follow the store";
  // Streams end so their clients reconnect elsewhere (or here later).
  EXPECT_EQ(broadcast.FinishedWithin(absl::Seconds(10)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(member.FinishedWithin(absl::Seconds(10)).error_code(), grpc::StatusCode::UNAVAILABLE);

  ASSERT_TRUE(redis.Restart().ok());
  EXPECT_TRUE(
      WaitUntil([&] { return HttpRequest(broker.http_addr(), "GET", "/readyz").status == 200; },
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

// Publishes with client ids from a thread, recording every acknowledged one;
// a publish that fails is retried with the same id (the broker deduplicates).
class Publisher {
 public:
  explicit Publisher(EventBroker::Stub* stub) : stub_(stub) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Publisher() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t acked() {
    absl::MutexLock lock(&mu_);
    return acked_.size();
  }
  size_t failures() {
    absl::MutexLock lock(&mu_);
    return failures_;
  }
  std::map<std::string, uint64_t> Acked() {
    absl::MutexLock lock(&mu_);
    return acked_;
  }

 private:
  void Run() {
    int i = 0;
    while (!stop_) {
      std::string id = absl::StrCat("pub-", i);
      broker::v1::PublishResponse resp;
      grpc::Status st = Publish(stub_, MakeEvent("order.created", id), &resp);
      absl::MutexLock lock(&mu_);
      if (st.ok()) {
        acked_[id] = resp.sequence();
        ++i;
      } else {
        ++failures_;
        auto stopping = [this] { return stop_.load(); };
        mu_.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(20));
      }
    }
  }

  EventBroker::Stub* stub_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  absl::Mutex mu_;
  std::map<std::string, uint64_t> acked_ ABSL_GUARDED_BY(mu_);
  size_t failures_ ABSL_GUARDED_BY(mu_) = 0;
};

// Every acknowledged publish is stored under the sequence it was acked with,
// and no sequence was handed out twice.
void ExpectAllAckedStored(EventBroker::Stub* stub, const std::map<std::string, uint64_t>& acked) {
  std::map<uint64_t, std::string> stored;
  for (const auto& ev : AllEvents(stub)) stored[ev.sequence()] = ev.id();
  std::set<uint64_t> seqs;
  for (const auto& [id, seq] : acked) {
    EXPECT_TRUE(seqs.insert(seq).second) << "sequence " << seq << " acked twice";
    auto it = stored.find(seq);
    ASSERT_TRUE(it != stored.end()) << "acked publish " << id << " (sequence " << seq << ") lost";
    EXPECT_EQ(it->second, id);
  }
}

TEST(BrokerRedisOutageTest, RedisKilledDuringPublishesLosesNothingAcknowledged) {
  std::optional<DurableRedisAndBroker> env = DurableRedisAndBroker::Start();
  ASSERT_TRUE(env.has_value());
  RedisServer& redis = *env->redis;
  testing::ServiceProcess& broker = *env->broker;
  auto stub = Connect(broker);
  Publisher pub(stub.get());
  ASSERT_TRUE(WaitUntil([&] { return pub.acked() >= 200; }, absl::Seconds(30)));
  redis.Kill9();
  size_t at_kill = pub.acked();
  ASSERT_TRUE(WaitUntil([&] { return pub.failures() > 0; }, absl::Seconds(10)));
  ASSERT_TRUE(redis.Restart().ok());
  // The broker recovers on its own: publishing resumes.
  ASSERT_TRUE(WaitUntil([&] { return pub.acked() >= at_kill + 200; }, absl::Seconds(30)))
      << broker.Log();
  pub.Stop();
  ExpectAllAckedStored(stub.get(), pub.Acked());
}

TEST(BrokerRedisClusterTest, MasterFailoverWithSyncReplicatedLosesNothingAcknowledged) {
  absl::StatusOr<std::unique_ptr<testing::RedisCluster>> cluster =
      testing::RedisCluster::Start(3, 1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto broker = testing::ServiceProcess::Start(
      BROKER_BIN, {"--store=" + (*cluster)->url(), "--sync=replicated", "--redis_min_replicas=1",
                   "--redis_timeout=10s", "--redis_prefix=shop"});
  ASSERT_TRUE(broker.ok()) << broker.status();
  auto stub = Connect(**broker);
  Publisher pub(stub.get());
  ASSERT_TRUE(WaitUntil([&] { return pub.acked() >= 200; }, absl::Seconds(30)));
  int slot = testing::RedisKeySlot("{shop}");
  absl::StatusOr<size_t> master = (*cluster)->MasterOf(slot);
  ASSERT_TRUE(master.ok()) << master.status();
  (*cluster)->node(*master)->Kill9();
  size_t at_kill = pub.acked();
  absl::StatusOr<size_t> promoted = (*cluster)->WaitForNewMaster(slot, *master, absl::Seconds(30));
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  // The old master comes back as the new master's replica, so WAIT can
  // confirm writes again; no broker is restarted.
  ASSERT_TRUE((*cluster)->node(*master)->Restart().ok());
  ASSERT_TRUE(WaitUntil([&] { return pub.acked() >= at_kill + 200; }, absl::Seconds(60)))
      << (*broker)->Log();
  pub.Stop();
  ExpectAllAckedStored(stub.get(), pub.Acked());
}

TEST(BrokerRedisOutageTest, StartsBeforeRedisAndServesOnceItComes) {
  // A port nothing listens on yet: Redis will be started there later.
  absl::StatusOr<std::unique_ptr<RedisServer>> probe = RedisServer::Start();
  ASSERT_TRUE(probe.ok()) << probe.status();
  std::string url = (*probe)->url();
  (*probe)->Kill9();
  auto broker = testing::ServiceProcess::Start(BROKER_BIN, {"--store=" + url});
  ASSERT_TRUE(broker.ok()) << broker.status();
  EXPECT_EQ(HttpRequest((*broker)->http_addr(), "GET", "/readyz").status, 503);
  EXPECT_EQ(HttpRequest((*broker)->http_addr(), "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest((*broker)->http_addr(), "GET", "/api/events/stats").status, 503);
  auto channel = grpc::CreateChannel((*broker)->grpc_addr(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto serving = [&] {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    return st.ok() ? resp.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  };
  EXPECT_EQ(serving(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto stub = EventBroker::NewStub(channel);
  broker::v1::PublishResponse resp;
  grpc::Status early = Publish(stub.get(), MakeEvent("order.created"), &resp);
  EXPECT_EQ(early.error_code(), grpc::StatusCode::UNAVAILABLE) << early.error_message();
  {
    grpc::ClientContext ctx;
    broker::v1::Delivery d;
    auto reader = stub->Subscribe(&ctx, SubscribeRequest());
    EXPECT_FALSE(reader->Read(&d));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  }

  ASSERT_TRUE((*probe)->Restart().ok());
  EXPECT_TRUE(WaitUntil([&] { return serving() == grpc::health::v1::HealthCheckResponse::SERVING; },
                        absl::Seconds(20)))
      << (*broker)->Log();
  EXPECT_EQ(HttpRequest((*broker)->http_addr(), "GET", "/readyz").status, 200);
  EXPECT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
  EXPECT_EQ(resp.sequence(), 1u);
  // SIGTERM while waiting for Redis also exits cleanly.
  auto waiting = testing::ServiceProcess::Start(BROKER_BIN, {"--store=redis://127.0.0.1:1"});
  ASSERT_TRUE(waiting.ok()) << waiting.status();
  EXPECT_EQ((*waiting)->Terminate(absl::Seconds(10)), 0);
}

// Three brokers on one Redis behave as one: publishes spread over them share
// one sequence, dedupe works across them, every broadcast subscriber on every
// replica sees every event in order, history and stats answer for all.
class BrokerReplicasOn : public ::testing::TestWithParam<bool> {
 protected:
  // A standalone Redis, or (param true) a 3-master Cluster with a replica
  // each; the store URL of it.
  std::string StartStore() {
    if (GetParam()) {
      auto c = testing::RedisCluster::Start(3, 1);
      EXPECT_TRUE(c.ok()) << c.status();
      if (!c.ok()) return "";
      cluster_ = *std::move(c);
      return cluster_->url();
    }
    auto r = RedisServer::Start();
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    redis_ = *std::move(r);
    return redis_->url();
  }
  // Starts the store and `n` broker replicas on it (brokers_, stubs_).
  void StartReplicas(int n) {
    std::string store = StartStore();
    ASSERT_FALSE(store.empty());
    for (int i = 0; i < n; ++i) {
      auto b = testing::ServiceProcess::Start(BROKER_BIN, {"--store=" + store});
      ASSERT_TRUE(b.ok()) << b.status();
      stubs_.push_back(Connect(**b));
      brokers_.push_back(*std::move(b));
    }
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<testing::RedisCluster> cluster_;
  std::vector<std::unique_ptr<testing::ServiceProcess>> brokers_;
  std::vector<std::unique_ptr<EventBroker::Stub>> stubs_;
};

TEST_P(BrokerReplicasOn, ThreeReplicasActAsOneBroker) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(3));
  auto& brokers = brokers_;
  auto& stubs = stubs_;
  std::vector<std::unique_ptr<Collector>> subscribers;
  for (auto& stub : stubs) {
    SubscribeRequest req;
    req.add_types("order.*");
    subscribers.push_back(std::make_unique<Collector>(stub.get(), req));
  }
  constexpr int kEvents = 300;
  std::map<uint64_t, std::string> acked;
  for (int i = 0; i < kEvents; ++i) {
    broker::v1::PublishResponse resp;
    ASSERT_TRUE(
        Publish(stubs[i % 3].get(), MakeEvent("order.created", absl::StrCat("ev-", i)), &resp)
            .ok());
    EXPECT_FALSE(resp.duplicate());
    EXPECT_TRUE(acked.emplace(resp.sequence(), resp.id()).second)
        << "sequence " << resp.sequence() << " handed out twice";
  }
  // Each replica delivered its own commits without reading them back, and
  // read the others' from the store.
  auto tail = [&](int i, const std::string& source) {
    return MetricValue(*brokers[i],
                       "switchboard_broker_tail_events_total{source=\"" + source + "\"}");
  };
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(WaitUntil([&] { return tail(i, "local") + tail(i, "store") >= kEvents; },
                          absl::Seconds(10)))
        << "replica " << i;
    EXPECT_GT(tail(i, "local"), 0) << "replica " << i;
    EXPECT_GT(tail(i, "store"), 0) << "replica " << i;
  }
  // A retry through another replica is recognised.
  broker::v1::PublishResponse dup;
  ASSERT_TRUE(Publish(stubs[1].get(), MakeEvent("order.created", "ev-0"), &dup).ok());
  EXPECT_TRUE(dup.duplicate());
  EXPECT_EQ(dup.sequence(), acked.begin()->first);

  for (size_t r = 0; r < subscribers.size(); ++r) {
    ASSERT_TRUE(subscribers[r]->WaitForCount(kEvents)) << "replica " << r;
    std::vector<Delivery> got = subscribers[r]->Got();
    ASSERT_EQ(got.size(), static_cast<size_t>(kEvents)) << "replica " << r;
    uint64_t prev = 0;
    for (const Delivery& d : got) {
      EXPECT_GT(d.event().sequence(), prev) << "replica " << r << " out of order";
      prev = d.event().sequence();
      EXPECT_EQ(acked[d.event().sequence()], d.event().id());
    }
  }
  for (auto& stub : stubs) {
    broker::v1::GetEventHistoryRequest req;
    req.set_correlation_id("corr-1");
    req.set_limit(1000);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetEventHistory(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.events_size(), kEvents);
  }
  // Every replica's stats count every replica's subscribers.
  auto subscribers_seen = [&](EventBroker::Stub* stub) {
    broker::v1::GetStatsResponse stats;
    grpc::ClientContext ctx;
    if (!stub->GetStats(&ctx, {}, &stats).ok()) return -1;
    return static_cast<int>(stats.active_subscribers());
  };
  for (auto& stub : stubs) {
    EXPECT_TRUE(WaitUntil([&] { return subscribers_seen(stub.get()) == 3; }, absl::Seconds(10)))
        << subscribers_seen(stub.get());
  }

  // kill -9 of one replica mid-stream: the others go on, nothing acked is lost.
  Publisher pub(stubs[0].get());
  ASSERT_TRUE(WaitUntil([&] { return pub.acked() >= 50; }, absl::Seconds(20)));
  brokers[2]->Kill9();
  ASSERT_TRUE(WaitUntil([&] { return pub.acked() >= 150; }, absl::Seconds(20)));
  pub.Stop();
  ExpectAllAckedStored(stubs[1].get(), pub.Acked());
  size_t total = kEvents + pub.acked();
  EXPECT_TRUE(subscribers[1]->WaitForCount(total)) << subscribers[1]->Count() << " of " << total;
  // The dead replica's subscriber is no longer counted.
  EXPECT_TRUE(WaitUntil([&] { return subscribers_seen(stubs[0].get()) == 2; }, absl::Seconds(10)));
}

// A consumer group with members on different replicas shares the work: each
// event to one member, acks through any replica; a replica killed with
// unacked deliveries loses nothing, they reach the other member again.
TEST_P(BrokerReplicasOn, GroupMembersOnDifferentReplicasShareTheWork) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas(3));
  auto& brokers = brokers_;
  auto& stubs = stubs_;
  // Member A on replica 0 acks everything (through replica 2); member B on
  // replica 1 acks nothing with a sequence ending in 7 (they stay pending).
  SubscribeRequest req = GroupReq("work", absl::Seconds(2));
  req.set_max_deliveries(1000);  // B's unacked ones may come back to B a few times
  // A's acks go through the third replica.
  Collector member_a(
      stubs[0].get(), req, [](const Delivery&) { return true; }, stubs[2].get());
  Collector member_b(stubs[1].get(), req,
                     [](const Delivery& d) { return d.event().sequence() % 10 != 7; });
  constexpr int kEvents = 400;
  std::set<uint64_t> published;
  for (int i = 0; i < kEvents; ++i) {
    broker::v1::PublishResponse resp;
    ASSERT_TRUE(
        Publish(stubs[i % 3].get(), MakeEvent("order.created", absl::StrCat("w-", i)), &resp).ok());
    published.insert(resp.sequence());
  }
  auto delivered = [&] {
    std::set<uint64_t> all;
    for (const auto& d : member_a.Got()) all.insert(d.event().sequence());
    for (const auto& d : member_b.Got()) all.insert(d.event().sequence());
    return all;
  };
  ASSERT_TRUE(WaitUntil([&] { return delivered() == published; }, absl::Seconds(30)))
      << delivered().size() << " of " << published.size();
  EXPECT_GT(member_a.Count(), 0u);
  EXPECT_GT(member_b.Count(), 0u) << "both members get work";
  // Stats from the third replica count both members.
  auto members_seen = [&] {
    broker::v1::GetStatsResponse stats;
    grpc::ClientContext ctx;
    if (!stubs[2]->GetStats(&ctx, {}, &stats).ok()) return -1;
    for (const auto& g : stats.groups()) {
      if (g.name() == "work") return static_cast<int>(g.members());
    }
    return 0;
  };
  EXPECT_TRUE(WaitUntil([&] { return members_seen() == 2; }, absl::Seconds(10))) << members_seen();
  // No event went to both before its deadline could pass (B's unacked ones
  // come back after 2 s, to either member, with attempt >= 2).
  std::set<uint64_t> held_by_b;
  for (const auto& d : member_b.Got()) {
    if (d.event().sequence() % 10 == 7) held_by_b.insert(d.event().sequence());
  }
  ASSERT_FALSE(held_by_b.empty());
  brokers[1]->Kill9();
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::set<uint64_t> again;
        for (const auto& d : member_a.Got()) {
          if (d.delivery_attempt() >= 2) again.insert(d.event().sequence());
        }
        return std::includes(again.begin(), again.end(), held_by_b.begin(), held_by_b.end());
      },
      absl::Seconds(30)))
      << "the killed replica's unacked deliveries reach the other member";
  // Only what B held came again: a delivery acked in time is never
  // delivered twice (its lease did not run out under its member).
  for (Collector* c : {&member_a, &member_b}) {
    for (const auto& d : c->Got()) {
      if (d.delivery_attempt() >= 2) {
        EXPECT_EQ(d.event().sequence() % 10, 7u)
            << "sequence " << d.event().sequence() << " redelivered though acked";
      }
    }
  }
  // Nothing left pending once A acked the redeliveries.
  auto pending = [&] {
    broker::v1::GetStatsResponse stats;
    grpc::ClientContext ctx;
    if (!stubs[2]->GetStats(&ctx, {}, &stats).ok()) return int64_t{-1};
    for (const auto& g : stats.groups()) {
      if (g.name() == "work") return static_cast<int64_t>(g.pending());
    }
    return int64_t{-2};
  };
  EXPECT_TRUE(WaitUntil([&] { return pending() == 0; }, absl::Seconds(10))) << pending();
}

// The shared client (workers, webhook-delivery) spreads its calls over every
// broker replica it is given, and keeps going on the living ones.
TEST(BrokerClientReplicasTest, ClientSpreadsOverReplicasAndFollowsTheLivingOnes) {
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  std::vector<std::unique_ptr<testing::ServiceProcess>> brokers;
  for (int i = 0; i < 2; ++i) {
    auto b = testing::ServiceProcess::Start(BROKER_BIN, {"--store=" + (*redis)->url()});
    ASSERT_TRUE(b.ok()) << b.status();
    brokers.push_back(*std::move(b));
  }
  auto published_by = [&](int i) {
    return MetricValue(*brokers[i],
                       "switchboard_broker_events_published_total{type=\"order.created\"}");
  };
  std::unique_ptr<BrokerClient> client = NewGrpcBrokerClient(
      {absl::StrCat("ipv4:", brokers[0]->grpc_addr(), ",", brokers[1]->grpc_addr())});
  for (int i = 0; i < 100; ++i) {
    auto r = client->Publish(MakeEvent("order.created"), absl::Seconds(5));
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_GT(published_by(0), 10) << "calls are spread over the replicas";
  EXPECT_GT(published_by(1), 10) << "calls are spread over the replicas";
  double before = published_by(0);
  brokers[1]->Kill9();
  for (int i = 0; i < 100; ++i) {
    auto r = client->Publish(MakeEvent("order.created"), absl::Seconds(10));
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_GE(published_by(0), before + 100) << "the living replica takes everything";
}

INSTANTIATE_TEST_SUITE_P(Stores, BrokerReplicasOn, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "RedisCluster" : "Redis";
                         });

}  // namespace
}  // namespace switchboard::broker_it
