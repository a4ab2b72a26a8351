// The whole mesh scaled out on real binaries and a real Redis: 3 brokers, 2
// job-workers, 2 webhook-delivery replicas and a receiver that verifies every
// signature. Orders arrive at a steady rate while one replica of each kind is
// killed with -9 and restarted, at different moments (on a Redis Cluster, a
// master too). Afterwards every order ended once (completed, or payment
// failed by rule), no job ran to completion twice, every order webhook reached
// the receiver (duplicates only with the same webhook-id), the consumer groups
// hold nothing, and either webhook replica lists every delivery.
//
// CHAOS_ORDERS (default 200) and CHAOS_RATE (orders/s, default 20) make it a
// longer soak: CHAOS_ORDERS=5000 ctest -R Chaos --timeout 3600.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/store_backends.h"

namespace switchboard {
namespace {

using testing::Backend;
using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;

constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr double kFailAbove = 10000;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

// A service of the mesh: restartable on the addresses it had.
struct Replica {
  std::string binary;
  std::vector<std::string> args;
  std::unique_ptr<ServiceProcess> process;
  std::string grpc_addr, http_addr;
};

class ChaosIT : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    cluster_mode_ = GetParam() == Backend::kRedisCluster;
    if (cluster_mode_) {
      auto c = testing::RedisCluster::Start(3, 1);
      ASSERT_TRUE(c.ok()) << c.status();
      cluster_ = *std::move(c);
      url_ = cluster_->url();
    } else {
      auto r = testing::RedisServer::Start();
      ASSERT_TRUE(r.ok()) << r.status();
      redis_ = *std::move(r);
      url_ = redis_->url();
    }
    std::ofstream(dir_ + "/worker.json")
        << "{\"paymentRule\": {\"failAboveTotal\": " << kFailAbove << "}}";
    // On a Cluster every acknowledged write waits for a replica, so a
    // master's failover loses none of them.
    std::vector<std::string> durable;
    if (cluster_mode_) durable = {"--redis_min_replicas=1", "--redis_timeout=15s"};
    std::vector<std::string> broker_args = {"--store=" + url_};
    if (cluster_mode_) {
      broker_args.insert(broker_args.end(),
                         {"--sync=replicated", "--redis_min_replicas=1", "--redis_timeout=15s"});
    }
    for (int i = 0; i < 3; ++i) Add(&brokers_, BROKER_BIN, broker_args);
    std::vector<std::string> targets;
    for (const Replica& b : brokers_) targets.push_back(b.grpc_addr);
    std::string broker_list = "ipv4:" + absl::StrJoin(targets, ",");
    for (int i = 0; i < 2; ++i) {
      std::vector<std::string> args = {"--broker=" + broker_list,
                                       "--store=" + url_,
                                       "--config=" + dir_ + "/worker.json",
                                       absl::StrCat("--worker_id=w", i),
                                       "--ack_deadline=5s",
                                       absl::StrCat("--data_dir=", dir_, "/w", i)};
      args.insert(args.end(), durable.begin(), durable.end());
      Add(&workers_, WORKER_BIN, args);
    }
    for (int i = 0; i < 2; ++i) {
      std::vector<std::string> args = {
          "--broker=" + broker_list, "--store=" + url_,
          "--allow_private_targets", "--delivery_lease=3s",
          "--ack_deadline=5s",       absl::StrCat("--data_dir=", dir_, "/h", i)};
      args.insert(args.end(), durable.begin(), durable.end());
      // Leases of 3 s (a killed replica's deliveries move on quickly) need
      // Redis calls of 1 s at most.
      args.push_back("--redis_timeout=1s");
      Add(&hooks_, WEBHOOK_BIN, args);
    }
    // A receiver that takes 20 ms per webhook keeps deliveries in flight.
    auto r = ServiceProcess::Start(RECEIVER_BIN,
                                   {std::string("--secret=") + kSecret, "--respond_after=20ms"},
                                   absl::Seconds(30), /*grpc=*/false);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
    grpc::ChannelArguments ch;
    ch.SetLoadBalancingPolicyName("round_robin");
    broker_stub_ = broker::v1::EventBroker::NewStub(
        grpc::CreateCustomChannel(broker_list, grpc::InsecureChannelCredentials(), ch));
  }

  void Add(std::vector<Replica>* group, const std::string& binary, std::vector<std::string> args) {
    group->push_back(Replica{binary, std::move(args), nullptr, "", ""});
    Start(&group->back());
  }

  // Starts (or restarts, on the same ports) a replica and waits until ready.
  void Start(Replica* r) {
    std::vector<std::string> args = r->args;
    if (!r->grpc_addr.empty()) {
      args.push_back("--grpc_addr=" + r->grpc_addr);
      args.push_back("--http_addr=" + r->http_addr);
    }
    auto p = ServiceProcess::Start(r->binary, args);
    ASSERT_TRUE(p.ok()) << p.status();
    r->process = *std::move(p);
    r->grpc_addr = r->process->grpc_addr();
    r->http_addr = r->process->http_addr();
    ASSERT_TRUE(WaitUntil([&] { return HttpRequest(r->http_addr, "GET", "/readyz").status == 200; },
                          absl::Seconds(30)))
        << r->binary << " not ready:\n"
        << r->process->Log();
  }

  template <typename Stub>
  std::unique_ptr<typename Stub::Stub> StubOf(const Replica& r) {
    return Stub::NewStub(grpc::CreateChannel(r.grpc_addr, grpc::InsecureChannelCredentials()));
  }

  // Publishes order i, retrying (same id: the broker deduplicates) while a
  // broker or a Redis master is down.
  void PublishOrder(int i) {
    broker::v1::PublishRequest req;
    auto* ev = req.mutable_event();
    ev->set_id(absl::StrCat("evt_chaos_", GetParam() == Backend::kRedis ? "r" : "c", "_", i));
    ev->set_type("order.checkout_initiated");
    ev->set_source("checkout-service");
    ev->set_correlation_id(absl::StrCat("chaos-", i));
    auto& f = *ev->mutable_data()->mutable_fields();
    f["customerId"].set_string_value(absl::StrCat("cus_", i % 7));
    f["total"].set_number_value(i % 10 == 9 ? 2 * kFailAbove : 42.5);
    ASSERT_TRUE(WaitUntil(
        [&] {
          broker::v1::PublishResponse resp;
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
          return broker_stub_->Publish(&ctx, req, &resp).ok();
        },
        absl::Seconds(60), absl::Milliseconds(50)))
        << "order " << i << " could not be published";
  }

  std::vector<events::v1::Event> History(const std::string& correlation) {
    broker::v1::GetEventHistoryRequest req;
    req.set_correlation_id(correlation);
    req.set_limit(1000);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = broker_stub_->GetEventHistory(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.events().begin(), resp.events().end()};
  }

  // Orders whose history has a terminal event.
  int Finished(int orders) {
    broker::v1::GetEventHistoryRequest req;
    req.add_types("order.completed");
    req.add_types("order.payment_failed");
    req.set_limit(10000);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    if (!broker_stub_->GetEventHistory(&ctx, req, &resp).ok()) return -1;
    std::set<std::string> done;
    for (const auto& e : resp.events()) {
      if (absl::StartsWith(e.correlation_id(), "chaos-")) done.insert(e.correlation_id());
    }
    return std::min<int>(done.size(), orders);
  }

  // The sum of every series of a metric on a replica's /metrics.
  static double MetricSum(const Replica& r, const std::string& name) {
    double sum = 0;
    for (absl::string_view line :
         absl::StrSplit(HttpRequest(r.http_addr, "GET", "/metrics").body, '\n')) {
      if (!absl::StartsWith(line, name + " ") && !absl::StartsWith(line, name + "{")) continue;
      double v = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
    }
    return sum;
  }

  std::set<std::string> ReceivedIds() {
    auto r = HttpRequest(receiver_->http_addr(), "GET", "/received");
    google::protobuf::Struct s;
    std::set<std::string> out;
    if (!google::protobuf::util::JsonStringToMessage(r.body, &s).ok()) return out;
    for (const auto& v : s.fields().at("events").list_value().values()) {
      out.insert(v.struct_value().fields().at("id").string_value());
    }
    return out;
  }

  void Run() {
    const int orders = EnvInt("CHAOS_ORDERS", 200);
    const absl::Duration every = absl::Seconds(1) / EnvInt("CHAOS_RATE", 20);
    // The receiver takes order.* from the start; both replicas know it.
    webhooks::v1::RegisterWebhookRequest reg;
    reg.set_url(absl::StrCat("http://", receiver_->http_addr(), "/webhooks"));
    reg.add_events("order.*");
    reg.set_secret(kSecret);
    *reg.mutable_retry_delay() = google::protobuf::util::TimeUtil::MillisecondsToDuration(200);
    webhooks::v1::Webhook hook;
    {
      auto stub = StubOf<webhooks::v1::WebhookService>(hooks_[0]);
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->RegisterWebhook(&ctx, reg, &hook).ok());
    }
    auto hooks1 = StubOf<webhooks::v1::WebhookService>(hooks_[1]);
    ASSERT_TRUE(WaitUntil(
        [&] {
          webhooks::v1::ListWebhooksResponse resp;
          grpc::ClientContext ctx;
          return hooks1->ListWebhooks(&ctx, {}, &resp).ok() && resp.webhooks_size() == 1;
        },
        absl::Seconds(2)));

    // Who dies when, as a fraction of the orders published.
    const int broker_kill = orders / 5, worker_kill = 2 * orders / 5, hook_kill = 3 * orders / 5,
              master_kill = 4 * orders / 5, back_after = std::max(1, orders / 10);
    int killed_master = -1, hook_victim = -1;
    const int slot = testing::RedisKeySlot("{switchboard}");
    absl::Time next = absl::Now();
    for (int i = 0; i < orders; ++i) {
      absl::SleepFor(next - absl::Now());  // pacing the load, not synchronisation
      next += every;
      if (i == broker_kill) brokers_[1].process->Kill9();
      if (i == broker_kill + back_after) Start(&brokers_[1]);
      if (i == worker_kill) {
        // Best effort: with a job running (the handlers are quick).
        WaitUntil([&] { return MetricSum(workers_[0], "switchboard_worker_jobs_in_flight") >= 1; },
                  absl::Seconds(2), absl::Milliseconds(1));
        workers_[0].process->Kill9();
      }
      if (i == worker_kill + back_after) Start(&workers_[0]);
      if (i == hook_kill) {
        // Whichever replica is in the middle of deliveries (one may take all
        // the work): they must reach the receiver through the other replica
        // once the leases run out.
        ASSERT_TRUE(WaitUntil(
            [&] {
              for (int h = 0; h < 2; ++h) {
                if (MetricSum(hooks_[h], "switchboard_webhooks_in_flight") >= 1) hook_victim = h;
              }
              return hook_victim >= 0;
            },
            absl::Seconds(10), absl::Milliseconds(1)));
        hooks_[hook_victim].process->Kill9();
      }
      if (i == hook_kill + back_after) Start(&hooks_[hook_victim]);
      if (cluster_mode_ && i == master_kill) {
        absl::StatusOr<size_t> m = cluster_->MasterOf(slot);
        ASSERT_TRUE(m.ok()) << m.status();
        killed_master = static_cast<int>(*m);
        cluster_->node(*m)->Kill9();
        absl::StatusOr<size_t> promoted =
            cluster_->WaitForNewMaster(slot, killed_master, absl::Seconds(30));
        ASSERT_TRUE(promoted.ok()) << promoted.status();
        // Back as the new master's replica: WAIT can confirm writes again.
        ASSERT_TRUE(cluster_->node(killed_master)->Restart().ok());
      }
      PublishOrder(i);
      if (HasFatalFailure()) return;
    }

    ASSERT_TRUE(WaitUntil([&] { return Finished(orders) == orders; }, absl::Seconds(120)))
        << Finished(orders) << " of " << orders << " orders finished";

    // Every order ended once, by its rule; each step once.
    std::set<std::string> order_events;
    int completed = 0, failed = 0;
    for (int i = 0; i < orders; ++i) {
      std::string c = absl::StrCat("chaos-", i);
      std::map<std::string, int> n;
      for (const auto& e : History(c)) {
        n[e.type()]++;
        if (absl::StartsWith(e.type(), "order.")) order_events.insert(e.id());
      }
      bool should_fail = i % 10 == 9;
      EXPECT_EQ(n["order.created"], 1) << c;
      EXPECT_EQ(n["order.completed"], should_fail ? 0 : 1) << c;
      EXPECT_EQ(n["order.payment_failed"], should_fail ? 1 : 0) << c;
      EXPECT_EQ(n["job.completed"], should_fail ? 2 : 4) << c;
      (should_fail ? failed : completed)++;
    }
    // No job ran to completion twice: the shared job store holds one
    // completed record per job the orders needed, and every worker says so
    // (its stats come from the store, refreshed every 250 ms).
    for (Replica& w : workers_) {
      auto stub = StubOf<jobs::v1::JobWorker>(w);
      uint64_t jobs_completed = 0, jobs_failed = 0;
      ASSERT_TRUE(WaitUntil(
          [&] {
            jobs::v1::GetStatsResponse stats;
            grpc::ClientContext ctx;
            if (!stub->GetStats(&ctx, {}, &stats).ok()) return false;
            jobs_completed = jobs_failed = 0;
            for (const auto& q : stats.queues()) {
              jobs_completed += q.completed();
              jobs_failed += q.failed();
            }
            return jobs_completed == static_cast<uint64_t>(4 * completed + 2 * failed);
          },
          absl::Seconds(10)))
          << jobs_completed << " completed jobs, want " << 4 * completed + 2 * failed;
      EXPECT_EQ(jobs_failed, 0u);
    }
    // The consumer groups hold nothing and dead-lettered nothing.
    ASSERT_TRUE(WaitUntil(
        [&] {
          broker::v1::GetStatsResponse stats;
          grpc::ClientContext ctx;
          if (!broker_stub_->GetStats(&ctx, {}, &stats).ok()) return false;
          int idle = 0;
          for (const auto& g : stats.groups()) {
            if (g.name() != "job-worker" && g.name() != "webhook-delivery") continue;
            EXPECT_EQ(g.dead_lettered(), 0u) << g.name();
            idle += g.pending() == 0 && g.lag() == 0;
          }
          return idle == 2;
        },
        absl::Seconds(60)))
        << "a group still holds events";
    // Every order webhook reached the receiver (it verified each signature
    // and dedupes on webhook-id, so a duplicate is not a new event).
    ASSERT_TRUE(WaitUntil(
        [&] {
          std::set<std::string> got = ReceivedIds();
          return std::includes(got.begin(), got.end(), order_events.begin(), order_events.end());
        },
        absl::Seconds(60)))
        << ReceivedIds().size() << " of " << order_events.size() << " order webhooks received";
    std::set<std::string> got = ReceivedIds();
    for (const std::string& id : got) {
      EXPECT_TRUE(order_events.count(id)) << "an unknown event reached the receiver: " << id;
    }
    // Either webhook replica answers for every delivery.
    for (Replica& h : hooks_) {
      auto stub = StubOf<webhooks::v1::WebhookService>(h);
      ASSERT_TRUE(WaitUntil(
          [&] {
            webhooks::v1::GetStatsResponse stats;
            grpc::ClientContext ctx;
            return stub->GetStats(&ctx, {}, &stats).ok() &&
                   stats.delivered_webhooks() == order_events.size() &&
                   stats.queued_webhooks() == 0 && stats.failed_webhooks() == 0;
          },
          absl::Seconds(30)))
          << "webhook replica " << h.grpc_addr;
      webhooks::v1::ListDeliveriesRequest req;
      req.set_status(webhooks::v1::DELIVERY_STATUS_DELIVERED);
      req.set_limit(1000);
      webhooks::v1::ListDeliveriesResponse resp;
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->ListDeliveries(&ctx, req, &resp).ok());
      EXPECT_EQ(static_cast<size_t>(resp.deliveries_size()),
                std::min<size_t>(1000, order_events.size()));
    }
  }

  bool cluster_mode_ = false;
  std::string dir_ = testing::MakeTempDir();
  std::string url_;
  std::unique_ptr<testing::RedisServer> redis_;
  std::unique_ptr<testing::RedisCluster> cluster_;
  std::vector<Replica> brokers_, workers_, hooks_;
  std::unique_ptr<ServiceProcess> receiver_;
  std::unique_ptr<broker::v1::EventBroker::Stub> broker_stub_;
};

TEST_P(ChaosIT, KillDashNineOfEveryKindLosesNothing) { Run(); }

INSTANTIATE_TEST_SUITE_P(Stores, ChaosIT,
                         ::testing::Values(Backend::kRedis, Backend::kRedisCluster),
                         testing::BackendName);

}  // namespace
}  // namespace switchboard
