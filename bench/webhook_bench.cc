// webhook-delivery load generator. Starts the real broker and
// webhook-delivery (--redis: both on one fresh redis-server, with --replicas
// webhook-delivery replicas sharing it); (1) throughput: N events published at full speed, each
// delivered (signed, recorded in the outbox) to --url (nginx answering 204,
// see webhook_bench.sh), deliveries/s until the last is delivered; (2)
// latency: events published at --rate, delivered to an in-process receiver
// that notes arrival, p50/p99 from the intended publish time.
#include <atomic>
#include <cstdio>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "libs/common/admin_http.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

ABSL_FLAG(std::string, url, "", "endpoint for the throughput figure (nginx 204); empty: skip");
ABSL_FLAG(int, n, 20000, "events for the throughput figure");
ABSL_FLAG(int, rate, 1000, "events/s for the latency figure");
ABSL_FLAG(int, lat_secs, 5, "seconds of the latency figure");
ABSL_FLAG(int, per_webhook, 64, "webhook-delivery --max_in_flight_per_webhook");
ABSL_FLAG(std::string, redis, "",
          "run the broker and webhook-delivery on one fresh redis-server with this appendfsync "
          "(always, everysec, no); empty: embedded SQLite");
ABSL_FLAG(int, replicas, 1, "webhook-delivery replicas (more than 1 needs --redis)");
ABSL_FLAG(bool, broker_on_redis, true,
          "with --redis, the broker on the same Redis (false: on its embedded store, to tell "
          "the broker's share of a figure from webhook-delivery's)");

namespace sb = switchboard;

namespace {

struct Mesh {
  std::unique_ptr<sb::testing::RedisServer> redis;
  std::unique_ptr<sb::testing::ServiceProcess> broker;
  std::vector<std::unique_ptr<sb::testing::ServiceProcess>> hooks;
  std::unique_ptr<sb::broker::v1::EventBroker::Stub> broker_stub;
  std::unique_ptr<sb::webhooks::v1::WebhookService::Stub> hooks_stub;  // of the first replica
};

template <typename T>
T OrDie(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::fprintf(stderr, "%s\n", v.status().ToString().c_str());
    std::exit(2);
  }
  return *std::move(v);
}

Mesh StartMesh() {
  Mesh m;
  std::string dir = sb::testing::MakeTempDir();
  std::vector<std::string> store;
  if (std::string fsync = absl::GetFlag(FLAGS_redis); !fsync.empty()) {
    sb::testing::RedisOptions opts;
    opts.appendfsync = fsync;
    // As the peers' Redis (../shared/peers/run_all.sh): no AOF rewrite, whose
    // fork and copy of the whole data set would land in the measured window.
    opts.extra_config = {"auto-aof-rewrite-percentage 0"};
    m.redis = OrDie(sb::testing::RedisServer::Start(opts));
    store.push_back("--store=" + m.redis->url());
  }
  std::vector<std::string> broker_args = {"--data_dir=" + dir + "/broker", "--log_level=warn"};
  if (absl::GetFlag(FLAGS_broker_on_redis)) {
    broker_args.insert(broker_args.end(), store.begin(), store.end());
  }
  m.broker = OrDie(sb::testing::ServiceProcess::Start(BROKER_BIN, broker_args));
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_replicas)); ++i) {
    std::vector<std::string> args = {
        "--broker=" + m.broker->grpc_addr(), absl::StrCat("--data_dir=", dir, "/hooks", i),
        "--allow_private_targets", "--log_level=warn",
        absl::StrCat("--max_in_flight_per_webhook=", absl::GetFlag(FLAGS_per_webhook))};
    args.insert(args.end(), store.begin(), store.end());
    m.hooks.push_back(OrDie(sb::testing::ServiceProcess::Start(WEBHOOK_BIN, args)));
    sb::testing::WaitUntil(
        [&] {
          return sb::testing::HttpRequest(m.hooks.back()->http_addr(), "GET", "/readyz").status ==
                 200;
        },
        absl::Seconds(20));
  }
  m.broker_stub = sb::broker::v1::EventBroker::NewStub(
      grpc::CreateChannel(m.broker->grpc_addr(), grpc::InsecureChannelCredentials()));
  m.hooks_stub = sb::webhooks::v1::WebhookService::NewStub(
      grpc::CreateChannel(m.hooks[0]->grpc_addr(), grpc::InsecureChannelCredentials()));
  return m;
}

// "store" and "replicas" of a JSON line.
std::string StoreFields() {
  std::string fsync = absl::GetFlag(FLAGS_redis);
  return absl::StrCat(
      ",\"store\":\"", fsync.empty() ? "sqlite" : "redis", "\"",
      !fsync.empty() && !absl::GetFlag(FLAGS_broker_on_redis) ? ",\"broker_store\":\"sqlite\"" : "",
      fsync.empty() ? "" : absl::StrCat(",\"appendfsync\":\"", fsync, "\""),
      ",\"replicas\":", std::max(1, absl::GetFlag(FLAGS_replicas)));
}

// On a shared registry every replica must know the webhook before events
// arrive (the others learn it within 250 ms).
void WaitForRegistryEverywhere(Mesh& m) {
  for (auto& h : m.hooks) {
    auto stub = sb::webhooks::v1::WebhookService::NewStub(
        grpc::CreateChannel(h->grpc_addr(), grpc::InsecureChannelCredentials()));
    sb::testing::WaitUntil(
        [&] {
          sb::webhooks::v1::ListWebhooksResponse resp;
          grpc::ClientContext ctx;
          return stub->ListWebhooks(&ctx, {}, &resp).ok() && resp.webhooks_size() > 0;
        },
        absl::Seconds(5));
  }
}

void Register(Mesh& m, const std::string& url) {
  sb::webhooks::v1::RegisterWebhookRequest req;
  req.set_url(url);
  req.add_events("order.*");
  sb::webhooks::v1::Webhook w;
  grpc::ClientContext ctx;
  grpc::Status s = m.hooks_stub->RegisterWebhook(&ctx, req, &w);
  if (!s.ok()) {
    std::fprintf(stderr, "register: %s\n", s.error_message().c_str());
    std::exit(2);
  }
}

uint64_t Delivered(Mesh& m) {
  sb::webhooks::v1::GetStatsResponse stats;
  grpc::ClientContext ctx;
  m.hooks_stub->GetStats(&ctx, {}, &stats);
  return stats.delivered_webhooks();
}

sb::events::v1::Event Event(int i) {
  sb::events::v1::Event ev;
  ev.set_type("order.created");
  ev.set_source("webhook-bench");
  auto& f = *ev.mutable_data()->mutable_fields();
  f["i"].set_number_value(i);
  f["pad"].set_string_value(std::string(700, 'x'));  // ~1 KiB bodies, like the wrk figure
  return ev;
}

void Throughput(const std::string& url) {
  Mesh m = StartMesh();
  Register(m, url);
  WaitForRegistryEverywhere(m);
  int n = absl::GetFlag(FLAGS_n);
  int64_t t0 = absl::GetCurrentTimeNanos();
  for (int i = 0; i < n; i += 100) {
    sb::broker::v1::PublishBatchRequest req;
    for (int j = i; j < std::min(n, i + 100); ++j) *req.add_events() = Event(j);
    sb::broker::v1::PublishBatchResponse resp;
    grpc::ClientContext ctx;
    m.broker_stub->PublishBatch(&ctx, req, &resp);
  }
  double publish_secs = (absl::GetCurrentTimeNanos() - t0) / 1e9;
  bool all = sb::testing::WaitUntil([&] { return Delivered(m) >= static_cast<uint64_t>(n); },
                                    absl::Seconds(300), absl::Milliseconds(20));
  double secs = (absl::GetCurrentTimeNanos() - t0) / 1e9;
  std::printf(
      "{\"system\":\"switchboard\",\"figure\":\"webhook_deliveries\",\"n\":%d,\"body_bytes\":1024,"
      "\"complete\":%s,\"publish_secs\":%.3f,\"secs\":%.3f,\"deliveries_per_s\":%.0f,"
      "\"per_webhook_in_flight\":%d,\"target\":\"nginx 204\"%s}\n",
      n, all ? "true" : "false", publish_secs, secs, n / secs, absl::GetFlag(FLAGS_per_webhook),
      StoreFields().c_str());
  std::fflush(stdout);
}

void Latency() {
  Mesh m = StartMesh();
  int rate = absl::GetFlag(FLAGS_rate), n = rate * absl::GetFlag(FLAGS_lat_secs);
  std::vector<int64_t> intended(n), arrived(n, -1);
  // Each event's id (the broker's, from the body) to its index: the outbox's
  // deliveries name events by id. Events carry no id of their own here, as
  // in the throughput figure (a client id would add the dedupe check).
  std::map<std::string, int> index_of;
  absl::Mutex mu;
  sb::AdminHttpServer receiver(std::make_shared<prometheus::Registry>());
  std::atomic<int> count{0};
  receiver.Route("POST", "/hook", [&](const sb::HttpRequest& r) {
    int64_t now = absl::GetCurrentTimeNanos();
    size_t at = r.body.find("\"i\":");
    if (at != std::string::npos) {
      int i = std::atoi(r.body.c_str() + at + 4);
      // The body starts {"id":"<event id>",...
      std::string id;
      if (absl::StartsWith(r.body, "{\"id\":\"")) {
        size_t end = r.body.find('"', 7);
        if (end != std::string::npos) id = r.body.substr(7, end - 7);
      }
      absl::MutexLock lock(&mu);  // several sender connections, several server threads
      if (i >= 0 && i < n && arrived[i] < 0) {
        arrived[i] = now;
        index_of[id] = i;
        ++count;
      }
    }
    return sb::HttpResponse{204, "text/plain", ""};
  });
  // A thread per connection the senders may keep open: with fewer, requests
  // on the connections no thread serves wait seconds (that was the bench's
  // own stall, not webhook-delivery's).
  receiver.SetWorkerThreads(8 + absl::GetFlag(FLAGS_per_webhook) *
                                    std::max(1, absl::GetFlag(FLAGS_replicas)));
  int port = *receiver.Start("127.0.0.1:0");
  Register(m, absl::StrCat("http://127.0.0.1:", port, "/hook"));
  WaitForRegistryEverywhere(m);
  auto pub = m.broker_stub.get();
  struct Call {
    grpc::ClientContext ctx;
    sb::broker::v1::PublishRequest req;
    sb::broker::v1::PublishResponse resp;
  };
  int64_t start = absl::GetCurrentTimeNanos() + 10'000'000;
  int64_t interval = 1'000'000'000LL / rate;
  for (int i = 0; i < n; ++i) {
    intended[i] = start + i * interval;
    while (absl::GetCurrentTimeNanos() < intended[i]) {
      int64_t d = intended[i] - absl::GetCurrentTimeNanos();
      if (d > 100000) absl::SleepFor(absl::Nanoseconds(d - 60000));
    }
    auto* call = new Call();
    *call->req.mutable_event() = Event(i);
    pub->async()->Publish(&call->ctx, &call->req, &call->resp,
                          [call](grpc::Status) { delete call; });
  }
  bool all = sb::testing::WaitUntil([&] { return count.load() >= n; }, absl::Seconds(60));
  // Where the time went, from the outbox (the newest 1000 deliveries): from
  // being recorded to the first attempt (claim, send); the rest of the
  // latency is the broker's and the intake's.
  std::vector<int64_t> to_record, to_send, http;
  // Events over 5 ms: each stage's total, to say which stage makes the tail.
  int64_t tail_n = 0, tail_record = 0, tail_send = 0, tail_http = 0, tail_rest = 0;
  {
    sb::webhooks::v1::ListDeliveriesRequest req;
    req.set_limit(1000);
    sb::webhooks::v1::ListDeliveriesResponse resp;
    grpc::ClientContext ctx;
    if (m.hooks_stub->ListDeliveries(&ctx, req, &resp).ok()) {
      absl::MutexLock lock(&mu);
      for (const auto& d : resp.deliveries()) {
        int64_t created = google::protobuf::util::TimeUtil::TimestampToNanoseconds(d.created_at());
        if (d.attempts_size() == 0) continue;
        int64_t sent =
            google::protobuf::util::TimeUtil::TimestampToNanoseconds(d.attempts(0).time());
        int64_t took =
            google::protobuf::util::TimeUtil::DurationToNanoseconds(d.attempts(0).latency());
        to_send.push_back(sent - created);
        http.push_back(took);
        auto found = index_of.find(d.event_id());
        if (found == index_of.end()) continue;
        int i = found->second;
        to_record.push_back(created - intended[i]);
        if (arrived[i] - intended[i] > 5'000'000) {
          ++tail_n;
          tail_record += created - intended[i];
          tail_send += sent - created;
          tail_http += took;
          tail_rest += arrived[i] - sent - took;
        }
      }
    }
  }
  // A stage's percentile in microseconds (-1 when nothing was measured).
  auto stage = [](std::vector<int64_t>& v, double p) {
    if (v.empty()) return -1.0;
    std::sort(v.begin(), v.end());
    return v[size_t(p * (v.size() - 1))] / 1000.0;
  };
  double record_p50 = stage(to_record, 0.5), record_p99 = stage(to_record, 0.99);
  double send_p50 = stage(to_send, 0.5), http_p50 = stage(http, 0.5);
  if (tail_n > 0) {
    std::fprintf(stderr,
                 "webhook_bench: %lld of the newest 1000 over 5 ms; their mean: publish->recorded "
                 "%.0f us, recorded->sent %.0f us, http %.0f us, answered->seen %.0f us\n",
                 static_cast<long long>(tail_n), tail_record / 1e3 / tail_n,
                 tail_send / 1e3 / tail_n, tail_http / 1e3 / tail_n, tail_rest / 1e3 / tail_n);
  }
  double send_p99 = stage(to_send, 0.99);
  double send_max = to_send.empty() ? -1 : to_send.back() / 1000.0;
  // The HTTP exchange itself (from the attempt's start to the answer).
  double http_p99 = stage(http, 0.99);
  double http_max = http.empty() ? -1 : http.back() / 1000.0;
  std::vector<int64_t> lat;
  // When the slow ones were published (a stall at the start differs from
  // one every checkpoint): their count and the first and worst one's offset.
  int slow = 0;
  double first_slow_ms = -1, worst_at_ms = -1;
  {
    absl::MutexLock lock(&mu);
    int64_t worst = -1;
    for (int i = 0; i < n; ++i) {
      if (arrived[i] < 0) continue;
      int64_t l = arrived[i] - intended[i];
      lat.push_back(l);
      double at_ms = (intended[i] - start) / 1e6;
      if (l > 50'000'000) {
        if (slow++ == 0) first_slow_ms = at_ms;
      }
      if (l > worst) {
        worst = l;
        worst_at_ms = at_ms;
      }
    }
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    return lat.empty() ? -1.0
                       : lat[std::min(lat.size() - 1, size_t(p / 100 * (lat.size() - 1)))] / 1000.0;
  };
  std::printf(
      "{\"system\":\"switchboard\",\"figure\":\"webhook_latency\",\"rate_per_s\":%d,\"n\":%d,"
      "\"received\":%d,\"complete\":%s,\"p50_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f,"
      "\"published_to_recorded_p99_us\":%.0f,\"recorded_to_sent_p99_us\":%.0f,\"recorded_to_sent_"
      "max_us\":%.0f,\"http_p99_us\":%.0f,"
      "\"http_max_us\":%.0f,\"over_50ms\":%d,"
      "\"first_over_50ms_at_ms\":%.0f,\"max_at_ms\":%.0f,\"published_to_recorded_p50_us\":%.0f,"
      "\"recorded_to_sent_p50_us\":%.0f,\"http_p50_us\":%.0f%s}\n",
      rate, n, count.load(), all ? "true" : "false", pct(50), pct(99), pct(100), record_p99,
      send_p99, send_max, http_p99, http_max, slow, first_slow_ms, worst_at_ms, record_p50,
      send_p50, http_p50, StoreFields().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_url).empty()) Throughput(absl::GetFlag(FLAGS_url));
  Latency();
  return 0;
}
