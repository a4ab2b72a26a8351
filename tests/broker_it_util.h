#ifndef SWITCHBOARD_TESTS_BROKER_IT_UTIL_H_
#define SWITCHBOARD_TESTS_BROKER_IT_UTIL_H_

// Helpers of the event-broker integration tests: the real binary
// (BROKER_BIN) on ephemeral ports, driven through the generated client.
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

namespace switchboard::broker_it {

using broker::v1::Delivery;
using broker::v1::EventBroker;
using broker::v1::SubscribeRequest;
using google::protobuf::util::TimeUtil;
using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;

inline events::v1::Event MakeEvent(const std::string& type, const std::string& id = "",
                                   size_t payload_bytes = 0) {
  events::v1::Event ev;
  ev.set_type(type);
  ev.set_id(id);
  ev.set_source("it-test");
  ev.set_correlation_id("corr-1");
  auto& fields = *ev.mutable_data()->mutable_fields();
  fields["orderId"].set_string_value("ord_1");
  if (payload_bytes > 0) fields["pad"].set_string_value(std::string(payload_bytes, 'x'));
  return ev;
}

inline std::unique_ptr<EventBroker::Stub> Connect(const ServiceProcess& p) {
  return EventBroker::NewStub(
      grpc::CreateChannel(p.grpc_addr(), grpc::InsecureChannelCredentials()));
}

// Reads a Subscribe stream on its own thread; optionally acks what it gets.
class Collector {
 public:
  using AckPolicy = std::function<bool(const Delivery&)>;

  // Acks go through `ack_stub` when given (another broker replica), else
  // through the stream's own.
  Collector(EventBroker::Stub* stub, SubscribeRequest req, AckPolicy ack = nullptr,
            EventBroker::Stub* ack_stub = nullptr)
      : stub_(stub),
        ack_stub_(ack_stub != nullptr ? ack_stub : stub),
        req_(std::move(req)),
        ack_(std::move(ack)) {
    reader_ = stub_->Subscribe(&ctx_, req_);
    reader_->WaitForInitialMetadata();
    started_ = true;
    thread_ = std::thread([this] { Run(); });
  }
  ~Collector() { Stop(); }

  bool started() const { return started_; }
  void Stop() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Delivery> Got() {
    absl::MutexLock lock(&mu_);
    return got_;
  }
  size_t Count() {
    absl::MutexLock lock(&mu_);
    return got_.size();
  }
  bool WaitForCount(size_t n, absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return got_.size() >= n || done_; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
    return got_.size() >= n;
  }
  std::set<uint64_t> Acked() {
    absl::MutexLock lock(&mu_);
    return acked_;
  }
  // Every sequence an Ack was sent for, answered or not (a kill can take the
  // answer of an ack the broker applied).
  std::set<uint64_t> AckSent() {
    absl::MutexLock lock(&mu_);
    return ack_sent_;
  }
  grpc::Status Finished() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }
  // The stream's end status, or DEADLINE_EXCEEDED (from the test) when it
  // did not end within `timeout`.
  grpc::Status FinishedWithin(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(&done_), timeout)) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the stream did not end");
    }
    return status_;
  }

 private:
  void Run() {
    Delivery d;
    std::vector<std::pair<std::string, uint64_t>> to_ack;
    while (reader_->Read(&d)) {
      bool ack = ack_ && ack_(d);
      {
        absl::MutexLock lock(&mu_);
        got_.push_back(d);
      }
      if (ack) to_ack.emplace_back(d.ack_id(), d.event().sequence());
      if (!to_ack.empty()) FlushAcks(to_ack);
    }
    grpc::Status s = reader_->Finish();
    absl::MutexLock lock(&mu_);
    status_ = s;
    done_ = true;
  }
  void FlushAcks(std::vector<std::pair<std::string, uint64_t>>& to_ack) {
    broker::v1::AckRequest req;
    req.set_group(req_.group());
    for (auto& [id, seq] : to_ack) req.add_ack_ids(id);
    {
      absl::MutexLock lock(&mu_);
      for (auto& [id, seq] : to_ack) ack_sent_.insert(seq);
    }
    broker::v1::AckResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (ack_stub_->Ack(&ctx, req, &resp).ok()) {
      absl::MutexLock lock(&mu_);
      for (auto& [id, seq] : to_ack) acked_.insert(seq);
    }
    to_ack.clear();
  }

  EventBroker::Stub* stub_;
  EventBroker::Stub* ack_stub_;
  SubscribeRequest req_;
  AckPolicy ack_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<Delivery>> reader_;
  bool started_ = false;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<Delivery> got_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> acked_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> ack_sent_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

inline grpc::Status Publish(EventBroker::Stub* stub, const events::v1::Event& ev,
                            broker::v1::PublishResponse* resp) {
  broker::v1::PublishRequest req;
  *req.mutable_event() = ev;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return stub->Publish(&ctx, req, resp);
}

// Publishes `n` events of `type` in one PublishBatch; whether it succeeded.
inline bool PublishBatchOf(EventBroker::Stub* stub, int n,
                           const std::string& type = "order.created") {
  broker::v1::PublishBatchRequest batch;
  for (int i = 0; i < n; ++i) *batch.add_events() = MakeEvent(type);
  broker::v1::PublishBatchResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return stub->PublishBatch(&ctx, batch, &resp).ok();
}

inline uint64_t TotalEvents(EventBroker::Stub* stub) {
  broker::v1::GetStatsResponse stats;
  grpc::ClientContext ctx;
  EXPECT_TRUE(stub->GetStats(&ctx, {}, &stats).ok());
  return stats.total_events();
}

// All stored events, oldest first, through paged GetEventHistory.
inline std::vector<events::v1::Event> AllEvents(EventBroker::Stub* stub) {
  std::vector<events::v1::Event> out;
  uint64_t before = 0;
  while (true) {
    broker::v1::GetEventHistoryRequest req;
    req.set_limit(10000);
    req.set_before_sequence(before);
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->GetEventHistory(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok() || resp.events().empty()) break;
    for (const auto& e : resp.events()) out.push_back(e);
    before = resp.events().rbegin()->sequence();
    if (before <= 1) break;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

inline SubscribeRequest GroupReq(const std::string& group,
                                 absl::Duration deadline = absl::Seconds(30)) {
  SubscribeRequest req;
  req.set_group(group);
  req.set_start(SubscribeRequest::EARLIEST);
  req.add_types("order.*");
  *req.mutable_ack_deadline() =
      TimeUtil::MillisecondsToDuration(absl::ToInt64Milliseconds(deadline));
  return req;
}

// Every broker integration test runs on each store: the embedded SQLite
// store, and Redis (one real redis-server per test process; each data
// directory of a test maps to its own key prefix there, so "the same
// data_dir" still means "the same data").
enum class StoreMode { kEmbedded, kRedis };

inline std::string StoreModeName(const ::testing::TestParamInfo<StoreMode>& info) {
  return info.param == StoreMode::kEmbedded ? "Embedded" : "Redis";
}

class BrokerIT : public ::testing::TestWithParam<StoreMode> {
 protected:
  static void TearDownTestSuite() { redis_.reset(); }

  void SetUp() override {
    if (GetParam() == StoreMode::kRedis && !redis_) {
      absl::StatusOr<std::unique_ptr<testing::RedisServer>> r = testing::RedisServer::Start();
      ASSERT_TRUE(r.ok()) << r.status();
      redis_ = *std::move(r);
    }
  }

  // The flags that put a broker on this test's store for `data_dir`.
  std::vector<std::string> StoreArgs(const std::string& data_dir) const {
    if (GetParam() == StoreMode::kEmbedded) return {"--data_dir=" + data_dir};
    std::string prefix = "it" + std::to_string(std::hash<std::string>()(data_dir));
    return {"--data_dir=" + data_dir, "--store=" + redis_->url(), "--redis_prefix=" + prefix};
  }

  std::unique_ptr<ServiceProcess> StartBroker(const std::string& data_dir,
                                              std::vector<std::string> extra = {}) {
    std::vector<std::string> args = StoreArgs(data_dir);
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = ServiceProcess::Start(BROKER_BIN, args);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }

  bool redis_mode() const { return GetParam() == StoreMode::kRedis; }
  testing::RedisServer* redis() const { return redis_.get(); }

  std::string data_dir_ = testing::MakeTempDir();
  static inline std::unique_ptr<testing::RedisServer> redis_;
};

}  // namespace switchboard::broker_it

#endif  // SWITCHBOARD_TESTS_BROKER_IT_UTIL_H_
