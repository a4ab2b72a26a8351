#include "libs/broker_client/broker_client.h"

#include <arpa/inet.h>

#include <atomic>
#include <thread>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "libs/common/backoff.h"
#include "libs/common/grpc_server.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/thread_name.h"
#include "libs/common/wire_check.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"

namespace switchboard {
namespace {

void AddToken(const GrpcBrokerClientOptions& options, grpc::ClientContext* ctx) {
  if (!options.bearer_token.empty()) {
    ctx->AddMetadata("authorization", "Bearer " + options.bearer_token);
  }
}

using broker::v1::EventBroker;
using google::protobuf::util::TimeUtil;

google::protobuf::Duration ToProto(absl::Duration d) { return ToProtoDuration(d); }

bool Retryable(const grpc::Status& s) { return s.error_code() == grpc::StatusCode::UNAVAILABLE; }

class GroupSubscription : public BrokerSubscription {
 public:
  // Exactly one of the callbacks is set: on_batch reads SubscribeBatched,
  // on_delivery Subscribe.
  GroupSubscription(std::shared_ptr<grpc::Channel> channel, broker::v1::SubscribeRequest request,
                    DeliveryCallback on_delivery, DeliveryBatchCallback on_batch,
                    const GrpcBrokerClientOptions& options)
      : stub_(EventBroker::NewStub(channel)),
        request_(std::move(request)),
        on_delivery_(std::move(on_delivery)),
        on_batch_(std::move(on_batch)),
        options_(options) {
    thread_ = std::thread([this] { Run(); });
  }
  ~GroupSubscription() override { Stop(); }

  void Stop() override {
    {
      absl::MutexLock lock(&mu_);
      stopped_ = true;
      if (ctx_ != nullptr) ctx_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }
  bool connected() const override { return connected_.load(); }

 private:
  void Run() {
    SetThreadName("sb-subscribe");
    Backoff backoff(BackoffPolicy{options_.initial_backoff, 2.0, options_.max_backoff, 0.5});
    while (true) {
      auto ctx = std::make_shared<grpc::ClientContext>();
      // Wait for the connection rather than fail fast: a failed call would
      // abort the channel's connection attempt and start over.
      ctx->set_wait_for_ready(true);
      AddToken(options_, ctx.get());
      {
        absl::MutexLock lock(&mu_);
        if (stopped_) return;
        ctx_ = ctx;
      }
      connected_ = true;
      grpc::Status s = on_batch_
                           ? Read<broker::v1::DeliveryBatch>(
                                 stub_->SubscribeBatched(ctx.get(), request_), on_batch_, &backoff)
                           : Read<broker::v1::Delivery>(stub_->Subscribe(ctx.get(), request_),
                                                        on_delivery_, &backoff);
      connected_ = false;
      {
        absl::MutexLock lock(&mu_);
        ctx_.reset();
        if (stopped_) return;
      }
      if (!Retryable(s) && s.error_code() != grpc::StatusCode::CANCELLED &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
          s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED && !s.ok()) {
        LogError("group subscription refused", {{"group", request_.group()},
                                                {"code", static_cast<int>(s.error_code())},
                                                {"error", s.error_message()}});
      } else {
        LogWarn("group subscription ended; reconnecting",
                {{"group", request_.group()}, {"error", s.error_message()}});
      }
      absl::Duration wait = backoff.Next();
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopped_), wait);
      if (stopped_) return;
    }
  }

  // Hands every message of the stream to `callback` until it ends.
  template <typename Message, typename Callback>
  static grpc::Status Read(std::unique_ptr<grpc::ClientReader<Message>> reader,
                           const Callback& callback, Backoff* backoff) {
    Message m;
    bool got_any = false;
    while (reader->Read(&m)) {
      if (!got_any) {
        got_any = true;
        backoff->Reset();
      }
      callback(m);
    }
    return reader->Finish();
  }

  std::unique_ptr<EventBroker::Stub> stub_;
  const broker::v1::SubscribeRequest request_;
  const DeliveryCallback on_delivery_;
  const DeliveryBatchCallback on_batch_;
  const GrpcBrokerClientOptions options_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<grpc::ClientContext> ctx_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> connected_{false};
  std::thread thread_;
};

// gRPC's own reconnect backoff (1 s first, growing to 2 min) would keep a
// restarted broker unreachable long after it is back; follow ours instead.
std::shared_ptr<grpc::Channel> MakeChannel(const GrpcBrokerClientOptions& options) {
  grpc::ChannelArguments args;
  int initial = static_cast<int>(absl::ToInt64Milliseconds(options.initial_backoff));
  int max = static_cast<int>(absl::ToInt64Milliseconds(options.max_backoff));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::max(initial, 1));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::max(initial, 1));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(max, 1));
  args.SetMaxReceiveMessageSize(64 << 20);
  // After a disconnect the DNS resolver may wait up to 30 s before resolving
  // again (grpc.dns_min_time_between_resolutions_ms); an address literal
  // needs no resolution at all.
  std::string target = options.target;
  std::string host = target.substr(0, target.rfind(':'));
  in_addr a4;
  if (target.find("://") == std::string::npos && target.find(':') != std::string::npos &&
      inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    target = "ipv4:" + target;
  }
  // dns:///broker:50051 (a headless Service), or a list of addresses
  // (ipv4:10.0.0.1:50051,10.0.0.2:50051): calls spread over every address
  // round-robin, and a replica that goes away is dropped (for DNS at the
  // next resolution, at most a second later).
  if (absl::StartsWith(target, "dns:") ||
      (absl::StartsWith(target, "ipv4:") && absl::StrContains(target, ','))) {
    args.SetLoadBalancingPolicyName("round_robin");
    args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 1000);
  }
  AddTlsChannelArgs(options.tls, &args);
  return grpc::CreateCustomChannel(target, GrpcChannelCredentials(options.tls), args);
}

class GrpcBrokerClient : public BrokerClient {
 public:
  explicit GrpcBrokerClient(const GrpcBrokerClientOptions& options)
      : options_(options), channel_(MakeChannel(options)), stub_(EventBroker::NewStub(channel_)) {}

  absl::StatusOr<broker::v1::PublishResponse> Publish(events::v1::Event event,
                                                      absl::Duration timeout) override {
    if (event.id().empty()) event.set_id(NewId("evt"));
    broker::v1::PublishRequest req;
    *req.mutable_event() = std::move(event);
    broker::v1::PublishResponse resp;
    absl::Status s =
        Call(timeout, [&](grpc::ClientContext* ctx) { return stub_->Publish(ctx, req, &resp); });
    if (!s.ok()) return s;
    return resp;
  }

  absl::StatusOr<broker::v1::PublishBatchResponse> PublishBatch(
      std::vector<events::v1::Event> events, absl::Duration timeout) override {
    // One way to the RPC: EncodedEvents::Add gives events their ids.
    EncodedEvents encoded;
    for (auto& e : events) encoded.Add(std::move(e));
    return PublishEncoded(encoded, timeout);
  }

  absl::StatusOr<broker::v1::PublishBatchResponse> PublishEncoded(const EncodedEvents& events,
                                                                  absl::Duration timeout) override {
    // The request's bytes are the events' bytes: PublishBatchRequest has no
    // other field.
    grpc::Slice slice(events.wire().data(), events.wire().size());
    grpc::ByteBuffer request(&slice, 1);
    broker::v1::PublishBatchResponse resp;
    absl::Status s = Call(timeout, [&](grpc::ClientContext* ctx) {
      absl::Notification done;
      grpc::Status status;
      raw_.UnaryCall(ctx, "/switchboard.broker.v1.EventBroker/PublishBatch", grpc::StubOptions(),
                     &request, &resp, [&](grpc::Status st) {
                       status = std::move(st);
                       done.Notify();
                     });
      done.WaitForNotification();
      return status;
    });
    if (!s.ok()) return s;
    return resp;
  }

  absl::Status Ack(const std::string& group, const std::vector<std::string>& ack_ids,
                   absl::Duration timeout) override {
    broker::v1::AckRequest req;
    req.set_group(group);
    for (const auto& id : ack_ids) req.add_ack_ids(id);
    broker::v1::AckResponse resp;
    return Call(timeout, [&](grpc::ClientContext* ctx) { return stub_->Ack(ctx, req, &resp); });
  }

  absl::Status Nack(const std::string& group, const std::vector<std::string>& ack_ids,
                    absl::Duration delay, absl::string_view reason,
                    absl::Duration timeout) override {
    broker::v1::NackRequest req;
    req.set_group(group);
    for (const auto& id : ack_ids) req.add_ack_ids(id);
    *req.mutable_delay() = ToProto(delay);
    req.set_reason(ValidUtf8Prefix(reason, kMaxNackReasonBytes));
    broker::v1::NackResponse resp;
    return Call(timeout, [&](grpc::ClientContext* ctx) { return stub_->Nack(ctx, req, &resp); });
  }

  absl::Status ExtendAckDeadline(const std::string& group, const std::vector<std::string>& ack_ids,
                                 absl::Duration deadline, absl::Duration timeout) override {
    broker::v1::ModifyAckDeadlineRequest req;
    req.set_group(group);
    for (const auto& id : ack_ids) req.add_ack_ids(id);
    *req.mutable_ack_deadline() = ToProto(deadline);
    broker::v1::ModifyAckDeadlineResponse resp;
    return Call(timeout, [&](grpc::ClientContext* ctx) {
      return stub_->ModifyAckDeadline(ctx, req, &resp);
    });
  }

  std::unique_ptr<BrokerSubscription> SubscribeGroup(broker::v1::SubscribeRequest request,
                                                     DeliveryCallback on_delivery) override {
    return std::make_unique<GroupSubscription>(channel_, std::move(request), std::move(on_delivery),
                                               nullptr, options_);
  }

  std::unique_ptr<BrokerSubscription> SubscribeGroupBatched(
      broker::v1::SubscribeRequest request, DeliveryBatchCallback on_batch) override {
    return std::make_unique<GroupSubscription>(channel_, std::move(request), nullptr,
                                               std::move(on_batch), options_);
  }

 private:
  // Runs one RPC, retrying UNAVAILABLE with backoff until `timeout`.
  absl::Status Call(absl::Duration timeout,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc) {
    absl::Time deadline = absl::Now() + timeout;
    Backoff backoff(BackoffPolicy{options_.initial_backoff, 2.0, options_.max_backoff, 0.5});
    while (true) {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(deadline));
      ctx.set_wait_for_ready(true);
      AddToken(options_, &ctx);
      grpc::Status s = rpc(&ctx);
      if (s.ok() || !Retryable(s)) return FromGrpcStatus(s);
      absl::Duration wait = backoff.Next();
      if (absl::Now() + wait >= deadline) return FromGrpcStatus(s);
      absl::SleepFor(wait);
    }
  }

  const GrpcBrokerClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<EventBroker::Stub> stub_;
  grpc::TemplatedGenericStub<grpc::ByteBuffer, broker::v1::PublishBatchResponse> raw_{channel_};
};

}  // namespace

absl::StatusOr<broker::v1::PublishBatchResponse> BrokerClient::PublishEncoded(
    const EncodedEvents& events, absl::Duration timeout) {
  broker::v1::PublishBatchRequest req;
  if (!req.ParseFromString(events.wire())) {
    return absl::InvalidArgumentError("events: not a PublishBatchRequest's events");
  }
  std::vector<events::v1::Event> decoded(std::make_move_iterator(req.mutable_events()->begin()),
                                         std::make_move_iterator(req.mutable_events()->end()));
  return PublishBatch(std::move(decoded), timeout);
}

std::unique_ptr<BrokerClient> NewGrpcBrokerClient(const GrpcBrokerClientOptions& options) {
  return std::make_unique<GrpcBrokerClient>(options);
}

}  // namespace switchboard
