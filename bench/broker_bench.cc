// event-broker load generator. Starts the real broker (fresh data dir per
// scenario, --sync as given) and prints one JSON line per figure:
// unary publish (1 and 16 clients), batched publish, end-to-end latency at a
// fixed rate (from the intended send time), group drain with acks, and RSS
// with 1 M stored events and 1000 idle subscribers. 256-byte events.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "libs/common/auth.h"
#include "libs/security/tls.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "tests/testing/certs.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

ABSL_FLAG(std::string, broker_bin, BROKER_BIN, "event-broker binary");
ABSL_FLAG(std::string, sync, "normal", "--sync of the broker");
ABSL_FLAG(int, size, 256, "serialized event size in bytes");
ABSL_FLAG(int, unary_n, 10000, "events for the one-client unary figure");
ABSL_FLAG(int, unary16_n, 50000, "events for the 16-client unary figure");
ABSL_FLAG(int, batch_n, 200000, "events for the batched figure");
ABSL_FLAG(int, batch_inflight, 32,
          "batches in flight for the batched figure (32 x 100 events: a window below the "
          "JetStream peer's 4 096 messages)");
ABSL_FLAG(int, rate, 5000, "events/s for the latency figure");
ABSL_FLAG(int, lat_secs, 5, "seconds of the latency figure");
ABSL_FLAG(int, drain_n, 100000, "events for the group drain figure");
ABSL_FLAG(std::string, drain_rpc, "batched",
          "how the drain consumer subscribes: batched (SubscribeBatched) or subscribe");
ABSL_FLAG(int, rss_n, 1000000, "stored events for the RSS figure");
ABSL_FLAG(int, rss_subs, 1000, "idle subscribers for the RSS figure");
ABSL_FLAG(std::string, only, "", "comma-separated figures to run (default all)");
ABSL_FLAG(bool, tls_auth, false,
          "serve TLS (certificates made with openssl) and require a bearer token; clients "
          "present it: the cost of security, against a plain run");
ABSL_FLAG(std::string, redis, "",
          "run the broker on a fresh redis-server per scenario with this appendfsync "
          "(everysec, always); empty: the embedded store");

namespace sb = switchboard;
using switchboard::broker::v1::EventBroker;
namespace v1 = switchboard::broker::v1;

namespace {

int64_t NowNs() { return absl::GetCurrentTimeNanos(); }

switchboard::events::v1::Event MakeEvent(int size) {
  switchboard::events::v1::Event ev;
  ev.set_type("order.created");
  ev.set_source("bench");
  auto& f = *ev.mutable_data()->mutable_fields();
  f["p"].set_string_value("");
  int pad = size - static_cast<int>(ev.ByteSizeLong());
  f["p"].set_string_value(std::string(std::max(pad, 0), 'x'));
  return ev;
}

struct Lat {
  std::vector<int64_t> ns;
  double Pct(double p) {
    if (ns.empty()) return -1;
    std::sort(ns.begin(), ns.end());
    size_t i = std::min(ns.size() - 1, static_cast<size_t>(p / 100.0 * (ns.size() - 1) + 0.5));
    return ns[i] / 1000.0;
  }
};

// --tls_auth: the CA, the broker's certificate and the token, made once.
struct Security {
  sb::testing::CertFiles ca, server;
  std::string tokens_file;
  std::string token = "bench-token-0123456789";
};
const Security* Secure() {
  static const Security* security = []() -> const Security* {
    if (!absl::GetFlag(FLAGS_tls_auth)) return nullptr;
    auto* s = new Security();
    std::string dir = sb::testing::MakeTempDir();
    auto ca = sb::testing::MakeCa(dir, "bench-ca");
    auto server =
        ca.ok() ? sb::testing::MakeLeaf(*ca, dir, "broker", "broker", "DNS:localhost,IP:127.0.0.1")
                : absl::StatusOr<sb::testing::CertFiles>(ca.status());
    if (!server.ok()) {
      std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
      std::exit(2);
    }
    s->ca = *ca;
    s->server = *server;
    s->tokens_file = dir + "/tokens.jsonl";
    std::ofstream(s->tokens_file) << R"({"principal":"bench","token_sha256":")"
                                  << sb::Sha256Hex(s->token)
                                  << R"(","scopes":["publish:*","subscribe:*"]})"
                                  << "\n";
    return s;
  }();
  return security;
}

void AddAuth(grpc::ClientContext* ctx) {
  if (const Security* s = Secure()) ctx->AddMetadata("authorization", "Bearer " + s->token);
}

void Emit(const std::string& figure, const std::string& fields) {
  std::string redis = absl::GetFlag(FLAGS_redis);
  std::printf("{\"system\":\"switchboard\",\"figure\":\"%s\",\"size\":%d,\"sync\":\"%s\",%s%s%s}\n",
              figure.c_str(), absl::GetFlag(FLAGS_size), absl::GetFlag(FLAGS_sync).c_str(),
              Secure() != nullptr ? "\"tls_auth\":true," : "",
              redis.empty()
                  ? ""
                  : absl::StrCat("\"store\":\"redis\",\"appendfsync\":\"", redis, "\",").c_str(),
              fields.c_str());
  std::fflush(stdout);
}

// With --redis: the Redis of the current scenario (a fresh server each).
std::unique_ptr<sb::testing::RedisServer> current_redis;

std::unique_ptr<sb::testing::ServiceProcess> StartBroker(std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--data_dir=" + sb::testing::MakeTempDir(),
                                   "--sync=" + absl::GetFlag(FLAGS_sync), "--log_level=warn"};
  if (std::string fsync = absl::GetFlag(FLAGS_redis); !fsync.empty()) {
    sb::testing::RedisOptions opts;
    opts.appendfsync = fsync;
    opts.extra_config = {"auto-aof-rewrite-percentage 0"};
    current_redis.reset();
    auto r = sb::testing::RedisServer::Start(opts);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      std::exit(2);
    }
    current_redis = *std::move(r);
    args.push_back("--store=" + current_redis->url());
  }
  if (const Security* sec = Secure()) {
    args.push_back("--tls_cert=" + sec->server.cert);
    args.push_back("--tls_key=" + sec->server.key);
    args.push_back("--auth_tokens_file=" + sec->tokens_file);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  auto p = sb::testing::ServiceProcess::Start(absl::GetFlag(FLAGS_broker_bin), args);
  if (!p.ok()) {
    std::fprintf(stderr, "%s\n", p.status().ToString().c_str());
    std::exit(2);
  }
  return *std::move(p);
}

std::shared_ptr<grpc::Channel> Channel(const std::string& addr, int i = 0) {
  grpc::ChannelArguments args;
  args.SetInt("bench_channel", i);  // distinct channels get distinct connections
  args.SetMaxReceiveMessageSize(64 << 20);
  if (const Security* s = Secure()) {
    sb::ClientTlsConfig tls;
    tls.enabled = true;
    tls.ca_file = s->ca.cert;
    return grpc::CreateCustomChannel(addr, sb::GrpcChannelCredentials(tls), args);
  }
  return grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
}

void UnaryPublish(const std::string& figure, int clients, int n) {
  auto broker = StartBroker();
  std::vector<std::thread> threads;
  std::vector<Lat> lats(clients);
  std::atomic<int> errors{0};
  int64_t t0 = NowNs();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = EventBroker::NewStub(Channel(broker->grpc_addr(), c));
      v1::PublishRequest req;
      *req.mutable_event() = MakeEvent(absl::GetFlag(FLAGS_size));
      for (int i = c; i < n; i += clients) {
        v1::PublishResponse resp;
        grpc::ClientContext ctx;
        AddAuth(&ctx);
        int64_t s = NowNs();
        if (!stub->Publish(&ctx, req, &resp).ok()) ++errors;
        lats[c].ns.push_back(NowNs() - s);
      }
    });
  }
  for (auto& t : threads) t.join();
  double secs = (NowNs() - t0) / 1e9;
  Lat all;
  for (auto& l : lats) all.ns.insert(all.ns.end(), l.ns.begin(), l.ns.end());
  Emit(figure, absl::StrFormat("\"n\":%d,\"clients\":%d,\"errors\":%d,\"secs\":%.3f,"
                               "\"msgs_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
                               "\"p999_us\":%.1f",
                               n, clients, errors.load(), secs, n / secs, all.Pct(50), all.Pct(99),
                               all.Pct(99.9)));
}

// Publishes n events in batches of `batch` with up to `inflight` batches
// outstanding on one channel; returns seconds.
double BatchPublish(EventBroker::Stub* stub, int n, int batch, int inflight, int* errors) {
  v1::PublishBatchRequest req;
  auto ev = MakeEvent(absl::GetFlag(FLAGS_size));
  for (int i = 0; i < batch; ++i) *req.add_events() = ev;
  absl::Mutex mu;
  int outstanding = 0;
  int done_batches = 0;
  int total = (n + batch - 1) / batch;
  struct Call {
    grpc::ClientContext ctx;
    v1::PublishBatchResponse resp;
  };
  int64_t t0 = NowNs();
  for (int b = 0; b < total; ++b) {
    {
      absl::MutexLock lock(&mu);
      auto room = [&] { return outstanding < inflight; };
      mu.Await(absl::Condition(&room));
      ++outstanding;
    }
    auto* call = new Call();
    AddAuth(&call->ctx);
    stub->async()->PublishBatch(&call->ctx, &req, &call->resp, [&, call](grpc::Status s) {
      absl::MutexLock lock(&mu);
      if (!s.ok() && ++*errors == 1) {
        std::fprintf(stderr, "first error: %s\n", s.error_message().c_str());
      }
      --outstanding;
      ++done_batches;
      delete call;
    });
  }
  absl::MutexLock lock(&mu);
  auto all = [&] { return done_batches == total; };
  mu.Await(absl::Condition(&all));
  return (NowNs() - t0) / 1e9;
}

// The floor any unary call pays here: gRPC round trip to the broker for a call
// that touches no storage (Ack on a group that does not exist).
void UnaryFloor() {
  auto broker = StartBroker();
  auto stub = EventBroker::NewStub(Channel(broker->grpc_addr()));
  int n = absl::GetFlag(FLAGS_unary_n);
  v1::AckRequest req;
  req.set_group("no-such-group");
  req.add_ack_ids("1-1");
  Lat lat;
  int64_t t0 = NowNs();
  for (int i = 0; i < n; ++i) {
    v1::AckResponse resp;
    grpc::ClientContext ctx;
    int64_t s = NowNs();
    stub->Ack(&ctx, req, &resp);
    lat.ns.push_back(NowNs() - s);
  }
  double secs = (NowNs() - t0) / 1e9;
  Emit("grpc_unary_floor", absl::StrFormat("\"n\":%d,\"secs\":%.3f,\"calls_per_s\":%.0f,"
                                           "\"p50_us\":%.1f,\"p99_us\":%.1f",
                                           n, secs, n / secs, lat.Pct(50), lat.Pct(99)));
}

void BatchedPublish() {
  auto broker = StartBroker();
  auto stub = EventBroker::NewStub(Channel(broker->grpc_addr()));
  int n = absl::GetFlag(FLAGS_batch_n), errors = 0;
  double secs = BatchPublish(stub.get(), n, 100, absl::GetFlag(FLAGS_batch_inflight), &errors);
  Emit("publish_batch_100",
       absl::StrFormat("\"n\":%d,\"batch\":100,\"inflight\":%d,\"errors\":%d,"
                       "\"secs\":%.3f,\"msgs_per_s\":%.0f",
                       n, absl::GetFlag(FLAGS_batch_inflight), errors, secs, n / secs));
}

void EndToEndLatency(bool group) {
  auto broker = StartBroker();
  auto pub = EventBroker::NewStub(Channel(broker->grpc_addr(), 1));
  auto sub = EventBroker::NewStub(Channel(broker->grpc_addr(), 2));
  int rate = absl::GetFlag(FLAGS_rate), secs = absl::GetFlag(FLAGS_lat_secs);
  int n = rate * secs;
  std::vector<int64_t> intended(n);
  std::vector<int64_t> latency(n, -1);
  std::atomic<int> received{0};
  grpc::ClientContext sub_ctx;
  v1::SubscribeRequest req;
  if (group) {
    req.set_group("lat");
    req.set_max_in_flight(10000);
  }
  auto reader = sub->Subscribe(&sub_ctx, req);
  reader->WaitForInitialMetadata();
  std::thread consumer([&] {
    v1::Delivery d;
    std::vector<std::string> acks;
    while (reader->Read(&d)) {
      int64_t now = NowNs();
      int idx = std::stoi(d.event().metadata().at("i"));
      if (idx >= 0 && idx < n) latency[idx] = now - intended[idx];
      if (group) {
        acks.push_back(d.ack_id());
        if (acks.size() >= 64) {
          v1::AckRequest ack;
          ack.set_group("lat");
          for (auto& a : acks) ack.add_ack_ids(a);
          auto* ctx = new grpc::ClientContext();
          auto* resp = new v1::AckResponse();
          sub->async()->Ack(ctx, &ack, resp, [ctx, resp](grpc::Status) {
            delete ctx;
            delete resp;
          });
          acks.clear();
        }
      }
      if (++received == n) break;
    }
  });
  auto ev = MakeEvent(absl::GetFlag(FLAGS_size));
  struct Call {
    grpc::ClientContext ctx;
    v1::PublishRequest req;
    v1::PublishResponse resp;
  };
  std::atomic<int> outstanding{0};
  int64_t start = NowNs() + 10'000'000;
  int64_t interval = 1'000'000'000LL / rate;
  for (int i = 0; i < n; ++i) {
    intended[i] = start + i * interval;
    while (NowNs() < intended[i]) {
      int64_t d = intended[i] - NowNs();
      if (d > 100000) absl::SleepFor(absl::Nanoseconds(d - 60000));
    }
    auto* call = new Call();
    *call->req.mutable_event() = ev;
    (*call->req.mutable_event()->mutable_metadata())["i"] = absl::StrCat(i);
    ++outstanding;
    pub->async()->Publish(&call->ctx, &call->req, &call->resp, [call, &outstanding](grpc::Status) {
      --outstanding;
      delete call;
    });
  }
  double send_secs = (NowNs() - start) / 1e9;
  bool all = sb::testing::WaitUntil([&] { return received.load() >= n; }, absl::Seconds(30));
  sub_ctx.TryCancel();
  consumer.join();
  sb::testing::WaitUntil([&] { return outstanding.load() == 0; }, absl::Seconds(10));
  Lat l;
  for (int64_t v : latency) {
    if (v >= 0) l.ns.push_back(v);
  }
  Emit(group ? "e2e_latency_group" : "e2e_latency_broadcast",
       absl::StrFormat("\"rate_per_s\":%d,\"n\":%d,\"received\":%d,\"complete\":%s,"
                       "\"send_secs\":%.2f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
                       "\"max_us\":%.1f",
                       rate, n, received.load(), all ? "true" : "false", send_secs, l.Pct(50),
                       l.Pct(99), l.Pct(99.9), l.Pct(100)));
}

void GroupDrain() {
  auto broker = StartBroker();
  auto stub = EventBroker::NewStub(Channel(broker->grpc_addr(), 1));
  int n = absl::GetFlag(FLAGS_drain_n), errors = 0;
  std::string rpc = absl::GetFlag(FLAGS_drain_rpc);
  BatchPublish(stub.get(), n, 100, 8, &errors);
  auto sub = EventBroker::NewStub(Channel(broker->grpc_addr(), 2));
  grpc::ClientContext ctx;
  v1::SubscribeRequest req;
  req.set_group("drain");
  req.set_start(v1::SubscribeRequest::EARLIEST);
  req.set_max_in_flight(2048);
  std::atomic<int> acked{0};
  std::atomic<int> ack_calls_out{0};
  int received = 0, bad = 0;
  const size_t want_size = MakeEvent(absl::GetFlag(FLAGS_size)).data().ByteSizeLong();
  v1::AckRequest ack;
  ack.set_group("drain");
  auto flush = [&] {
    auto* actx = new grpc::ClientContext();
    auto* areq = new v1::AckRequest(ack);
    auto* aresp = new v1::AckResponse();
    ++ack_calls_out;
    sub->async()->Ack(actx, areq, aresp, [&, actx, areq, aresp](grpc::Status s) {
      if (s.ok()) acked += aresp->acked();
      --ack_calls_out;
      delete actx;
      delete areq;
      delete aresp;
    });
    ack.clear_ack_ids();
  };
  auto on_delivery = [&](const std::string& ack_id, size_t data_size) {
    if (data_size != want_size) ++bad;
    ack.add_ack_ids(ack_id);
    if (ack.ack_ids_size() >= 256) flush();
  };
  int64_t t0 = NowNs();
  if (rpc == "batched") {
    auto reader = sub->SubscribeBatched(&ctx, req);
    v1::DeliveryBatch batch;
    while (received < n && reader->Read(&batch)) {
      for (const v1::Delivery& d : batch.deliveries()) {
        ++received;
        on_delivery(d.ack_id(), d.event().data().ByteSizeLong());
      }
    }
  } else {
    auto reader = sub->Subscribe(&ctx, req);
    v1::Delivery d;
    while (received < n && reader->Read(&d)) {
      ++received;
      on_delivery(d.ack_id(), d.event().data().ByteSizeLong());
    }
  }
  if (ack.ack_ids_size() > 0) flush();
  double recv_secs = (NowNs() - t0) / 1e9;
  sb::testing::WaitUntil([&] { return acked.load() >= n; }, absl::Seconds(60));
  double secs = (NowNs() - t0) / 1e9;
  ctx.TryCancel();
  sb::testing::WaitUntil([&] { return ack_calls_out.load() == 0; }, absl::Seconds(10));
  Emit("group_drain_ack",
       absl::StrFormat("\"n\":%d,\"received\":%d,\"acked\":%d,\"bad\":%d,\"rpc\":\"%s\","
                       "\"ack_batch\":256,\"max_in_flight\":2048,\"recv_secs\":%.3f,"
                       "\"secs\":%.3f,\"msgs_per_s\":%.0f",
                       n, received, acked.load(), bad, rpc, recv_secs, secs, n / secs));
}

void RssWithStoredEventsAndIdleSubscribers() {
  auto broker = StartBroker();
  auto stub = EventBroker::NewStub(Channel(broker->grpc_addr(), 1));
  int n = absl::GetFlag(FLAGS_rss_n), errors = 0;
  double pub_secs = BatchPublish(stub.get(), n, 1000, 4, &errors);
  uint64_t rss_stored = broker->RssBytes();
  int subs = absl::GetFlag(FLAGS_rss_subs);
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < 10; ++i) channels.push_back(Channel(broker->grpc_addr(), 100 + i));
  struct Idle {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::Delivery>> reader;
  };
  std::vector<std::unique_ptr<Idle>> idle;
  for (int i = 0; i < subs; ++i) {
    auto s = EventBroker::NewStub(channels[i % channels.size()]);
    auto sub = std::make_unique<Idle>();
    v1::SubscribeRequest req;
    if (i % 2 == 1) {
      req.set_group(absl::StrCat("idle-", i));
      req.add_types("order.*");
    } else {
      req.add_types("cart.abandoned");
    }
    sub->reader = s->Subscribe(&sub->ctx, req);
    sub->reader->WaitForInitialMetadata();
    idle.push_back(std::move(sub));
  }
  v1::GetStatsResponse stats;
  grpc::ClientContext sctx;
  stub->GetStats(&sctx, {}, &stats);
  uint64_t rss = broker->RssBytes();
  Emit("rss_stored_events_idle_subscribers",
       absl::StrFormat("\"stored\":%llu,\"publish_secs\":%.2f,\"publish_msgs_per_s\":%.0f,"
                       "\"subscribers\":%u,\"rss_mb_stored_only\":%.1f,\"rss_mb\":%.1f,"
                       "\"storage_mb\":%.1f",
                       static_cast<unsigned long long>(stats.total_events()), pub_secs,
                       n / pub_secs, stats.active_subscribers(), rss_stored / 1048576.0,
                       rss / 1048576.0, stats.storage_bytes() / 1048576.0));
  for (auto& s : idle) s->ctx.TryCancel();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string only = absl::GetFlag(FLAGS_only);
  auto want = [&](const std::string& f) {
    return only.empty() || absl::StrCat(",", only, ",").find("," + f + ",") != std::string::npos;
  };
  if (want("floor")) UnaryFloor();
  if (want("unary1")) UnaryPublish("publish_unary_1client", 1, absl::GetFlag(FLAGS_unary_n));
  if (want("unary16")) UnaryPublish("publish_unary_16clients", 16, absl::GetFlag(FLAGS_unary16_n));
  if (want("batch")) BatchedPublish();
  if (want("e2e")) EndToEndLatency(false);
  if (want("e2e_group")) EndToEndLatency(true);
  if (want("drain")) GroupDrain();
  if (want("rss")) RssWithStoredEventsAndIdleSubscribers();
  return 0;
}
