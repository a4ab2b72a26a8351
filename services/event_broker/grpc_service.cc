#include "services/event_broker/grpc_service.h"

#include "libs/common/executor.h"
#include "libs/common/grpc_auth.h"
#include "libs/common/grpc_server.h"
#include "libs/common/wire_check.h"
#include "services/event_broker/delivery_codec.h"
#include "services/event_broker/visibility.h"

namespace switchboard::broker {
namespace {

void ToProto(const PublishResult& r, v1::PublishResponse* out) {
  out->set_id(r.id);
  out->set_sequence(r.sequence);
  out->set_duplicate(r.duplicate);
}

// One Subscribe stream. The broker calls OnReady/OnEnd from its threads;
// gRPC calls the On* reactions. At most one write is in flight, so a client
// that stops reading holds one delivery here and its bounded buffer in the
// broker, never more.
class SubscribeReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                               public SubscriptionSink {
 public:
  // `slow` runs the subscribe when finding its start reads the store
  // (start=TIME), so that never happens on a gRPC reaction thread.
  // `authorize` says whether the caller may make the parsed request.
  SubscribeReactor(Broker* broker, Executor* slow, const grpc::ByteBuffer* request_bytes,
                   bool batched,
                   const std::function<absl::Status(const v1::SubscribeRequest&)>& authorize)
      : batched_(batched) {
    if (broker == nullptr) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(BrokerSlot::NotReady()));
      return;
    }
    auto request = std::make_shared<v1::SubscribeRequest>();
    absl::Status parsed = ParseRequest(*request_bytes, request.get());
    if (parsed.ok()) parsed = authorize(*request);
    if (parsed.ok() && request->start() == v1::SubscribeRequest::TIME) {
      if (!slow->Submit([this, broker, request] { Start(broker, *request); })) {
        absl::MutexLock lock(&mu_);
        finished_ = true;
        Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "server busy: too many slow requests queued; retry later"));
      }
      return;
    }
    if (!parsed.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(parsed));
      return;
    }
    Start(broker, *request);
  }

  void OnReady() override {
    absl::MutexLock lock(&mu_);
    PumpLocked();
  }

  void OnEnd(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || ending_) return;
    ending_ = true;
    end_status_ = ToGrpcStatus(status);
    if (started_ && !writing_) {
      finished_ = true;
      Finish(end_status_);
    }
  }

  void OnSendInitialMetadataDone(bool ok) override {}

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (finished_) return;
    if (!ok) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed by client"));
      return;
    }
    if (ending_) {
      finished_ = true;
      Finish(end_status_);
      return;
    }
    PumpLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (started_ && !finished_) {
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    }
  }

  void OnDone() override {
    std::shared_ptr<Subscription> sub;
    {
      absl::MutexLock lock(&mu_);
      sub = std::move(sub_);
    }
    // Outside mu_: Close waits for a concurrent OnReady, which takes mu_.
    if (sub != nullptr) sub->Close();
    delete this;
  }

 private:
  void Start(Broker* broker, const v1::SubscribeRequest& request) {
    absl::StatusOr<std::shared_ptr<Subscription>> sub = broker->Subscribe(request, this);
    if (!sub.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(sub.status()));
      return;
    }
    // The broker may end the stream (OnEnd) from its threads as soon as the
    // subscription exists; until the headers are started OnEnd only records
    // the end, so Finish never comes before StartSendInitialMetadata.
    absl::MutexLock lock(&mu_);
    sub_ = *std::move(sub);
    // Headers now, so the client knows the subscription is in place.
    StartSendInitialMetadata();
    started_ = true;
    if (ending_ || cancelled_) {
      finished_ = true;
      Finish(cancelled_ ? grpc::Status::CANCELLED : end_status_);
      return;
    }
    PumpLocked();
  }

  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!started_ || writing_ || finished_ || ending_ || sub_ == nullptr) return;
    std::optional<Outgoing> next = std::move(following_);
    following_.reset();
    if (!next.has_value()) next = sub_->Next();
    if (!next.has_value()) return;
    grpc::WriteOptions options;
    if (batched_) {
      // Everything ready now, within the caps; never hinted, as nothing
      // taken is left behind for a later write to flush.
      scratch_.clear();
      AppendBatchedDelivery(*next->event, next->attempt, next->ack_id, &scratch_);
      for (int n = 1; n < kMaxBatchDeliveries && scratch_.size() < kMaxBatchBytes; ++n) {
        std::optional<Outgoing> more = sub_->Next();
        if (!more.has_value()) break;
        AppendBatchedDelivery(*more->event, more->attempt, more->ack_id, &scratch_);
      }
    } else {
      // A write with buffer_hint may wait in gRPC's buffer until a later
      // write flushes it, so it is hinted only when the delivery after it is
      // already ours (taken here): a burst goes out in few syscalls, and its
      // last write, unhinted, flushes it. (For a group member, an event still
      // available now may go to another member before our next write.)
      following_ = sub_->Next();
      if (following_.has_value()) options.set_buffer_hint();
      EncodeDelivery(*next->event, next->attempt, next->ack_id, &scratch_);
    }
    grpc::Slice slice(scratch_);
    delivery_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    StartWrite(&delivery_, options);
  }

  // Caps of one SubscribeBatched message (see broker.proto). The byte cap is
  // checked before each delivery is taken, so one message stays below it
  // plus one event: under gRPC's default 4 MiB receive limit.
  static constexpr int kMaxBatchDeliveries = 256;
  static constexpr size_t kMaxBatchBytes = 1 << 20;

  const bool batched_;
  absl::Mutex mu_;
  std::shared_ptr<Subscription> sub_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer delivery_ ABSL_GUARDED_BY(mu_);
  // The delivery to write after the one being written (see PumpLocked).
  std::optional<Outgoing> following_ ABSL_GUARDED_BY(mu_);
  std::string scratch_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // initial metadata started
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// Prepares events on this thread, appends them, and finishes the call once
// they are durable: from the writer thread, or from this one when the publish
// was committed inline (Broker::Append). `respond` turns the results into the
// response message.
template <typename Response>
void PublishAndAnswer(Broker* broker, grpc::ServerUnaryReactor* reactor,
                      grpc::ByteBuffer* response_bytes,
                      absl::Span<internal::RawEvent* const> events, absl::string_view field,
                      std::function<void(const std::vector<PublishResult>&, Response*)> respond) {
  absl::StatusOr<std::vector<NewEvent>> prepared = broker->Prepare(events, field);
  if (!prepared.ok()) {
    reactor->Finish(ToGrpcStatus(prepared.status()));
    return;
  }
  broker->Append(*std::move(prepared), [reactor, response_bytes, respond = std::move(respond)](
                                           absl::StatusOr<std::vector<PublishResult>> r) {
    if (!r.ok()) {
      reactor->Finish(ToGrpcStatus(r.status()));
      return;
    }
    Response response;
    respond(*r, &response);
    SerializeResponse(response, response_bytes);
    reactor->Finish(grpc::Status::OK);
  });
}

absl::Status EventBrokerService::AuthorizePublish(grpc::CallbackServerContext* ctx,
                                                  absl::string_view method,
                                                  absl::Span<internal::RawEvent* const> events) {
  absl::StatusOr<Principal> caller = AuthorizeCall(auth_, *ctx, method);
  if (!caller.ok()) return caller.status();
  if (caller->anonymous) return absl::OkStatus();
  for (const internal::RawEvent* e : events) {
    if (absl::Status s = RequirePublish(*caller, e->type()); !s.ok()) return Denied(s, method);
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* EventBrokerService::Publish(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* request_bytes,
                                                      grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  google::protobuf::Arena arena;
  // The wire twin of PublishRequest: the event's data stays bytes.
  auto* request = google::protobuf::Arena::CreateMessage<internal::RawPublishRequest>(&arena);
  if (absl::Status s =
          ParseRequest(*request_bytes, request, v1::PublishRequest::descriptor()->full_name());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (!request->has_event()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "event: required"));
    return reactor;
  }
  internal::RawEvent* event = request->mutable_event();
  if (absl::Status s = AuthorizePublish(ctx, "Publish", absl::MakeConstSpan(&event, 1)); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  Broker* broker = broker_->get();
  if (broker == nullptr) {
    reactor->Finish(ToGrpcStatus(BrokerSlot::NotReady()));
    return reactor;
  }
  PublishAndAnswer<v1::PublishResponse>(broker, reactor, response_bytes,
                                        absl::MakeConstSpan(&event, 1), "event",
                                        [](const std::vector<PublishResult>& r,
                                           v1::PublishResponse* out) { ToProto(r.front(), out); });
  return reactor;
}

grpc::ServerUnaryReactor* EventBrokerService::PublishBatch(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* request_bytes,
                                                           grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  // The request lives only until its events are prepared: an arena makes
  // its small allocations one. The wire twin of PublishBatchRequest keeps
  // each event's data as bytes (raw_event.proto).
  google::protobuf::Arena arena;
  auto* request = google::protobuf::Arena::CreateMessage<internal::RawPublishBatchRequest>(&arena);
  if (absl::Status s =
          ParseRequest(*request_bytes, request, v1::PublishBatchRequest::descriptor()->full_name());
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  Broker* broker = broker_->get();
  if (broker == nullptr) {
    reactor->Finish(ToGrpcStatus(BrokerSlot::NotReady()));
    return reactor;
  }
  std::vector<internal::RawEvent*> events;
  events.reserve(request->events_size());
  for (internal::RawEvent& e : *request->mutable_events()) events.push_back(&e);
  if (absl::Status s = AuthorizePublish(ctx, "PublishBatch", events); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  PublishAndAnswer<v1::PublishBatchResponse>(
      broker, reactor, response_bytes, absl::MakeConstSpan(events), "events",
      [](const std::vector<PublishResult>& r, v1::PublishBatchResponse* out) {
        for (const PublishResult& p : r) ToProto(p, out->add_results());
      });
  return reactor;
}

std::function<absl::Status(const v1::SubscribeRequest&)> EventBrokerService::SubscribeGate(
    grpc::CallbackServerContext* ctx, const char* method) {
  return [this, ctx, method](const v1::SubscribeRequest& request) -> absl::Status {
    absl::StatusOr<Principal> caller = AuthorizeCall(auth_, *ctx, method);
    if (!caller.ok()) return caller.status();
    std::vector<std::string> types(request.types().begin(), request.types().end());
    return Denied(RequireSubscribe(*caller, types, request.group()), method);
  };
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* EventBrokerService::Subscribe(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return new SubscribeReactor(broker_->get(), &slow_, request, /*batched=*/false,
                              SubscribeGate(ctx, "Subscribe"));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* EventBrokerService::SubscribeBatched(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  return new SubscribeReactor(broker_->get(), &slow_, request, /*batched=*/true,
                              SubscribeGate(ctx, "SubscribeBatched"));
}

absl::Status EventBrokerService::Denied(absl::Status status, absl::string_view method) {
  if (auth_ == nullptr) return status;
  return auth_->Denied(std::move(status), method);
}

absl::Status EventBrokerService::AuthorizeGroup(grpc::CallbackServerContext* ctx,
                                                absl::string_view method, absl::string_view group) {
  absl::StatusOr<Principal> caller = AuthorizeCall(auth_, *ctx, method);
  if (!caller.ok()) return caller.status();
  return Denied(RequireGroup(*caller, group), method);
}

grpc::ServerUnaryReactor* EventBrokerService::Ack(grpc::CallbackServerContext* ctx,
                                                  const v1::AckRequest* request,
                                                  v1::AckResponse* response) {
  if (absl::Status s = AuthorizeGroup(ctx, "Ack", request->group()); !s.ok()) {
    return Refuse(ctx, s);
  }
  Broker* broker = broker_->get();
  if (broker == nullptr)
    return FinishUnary(ctx, absl::StatusOr<v1::AckResponse>(BrokerSlot::NotReady()), response);
  if (broker->store_shared()) {
    return FinishOnExecutor(ctx, &acks_, response,
                            [broker, request] { return broker->Ack(*request); });
  }
  return FinishUnary(ctx, broker->Ack(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::Nack(grpc::CallbackServerContext* ctx,
                                                   const v1::NackRequest* request,
                                                   v1::NackResponse* response) {
  if (absl::Status s = AuthorizeGroup(ctx, "Nack", request->group()); !s.ok()) {
    return Refuse(ctx, s);
  }
  Broker* broker = broker_->get();
  if (broker == nullptr)
    return FinishUnary(ctx, absl::StatusOr<v1::NackResponse>(BrokerSlot::NotReady()), response);
  if (broker->store_shared()) {
    return FinishOnExecutor(ctx, &acks_, response,
                            [broker, request] { return broker->Nack(*request); });
  }
  return FinishUnary(ctx, broker->Nack(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::ModifyAckDeadline(
    grpc::CallbackServerContext* ctx, const v1::ModifyAckDeadlineRequest* request,
    v1::ModifyAckDeadlineResponse* response) {
  if (absl::Status s = AuthorizeGroup(ctx, "ModifyAckDeadline", request->group()); !s.ok()) {
    return Refuse(ctx, s);
  }
  Broker* broker = broker_->get();
  if (broker == nullptr)
    return FinishUnary(ctx, absl::StatusOr<v1::ModifyAckDeadlineResponse>(BrokerSlot::NotReady()),
                       response);
  if (broker->store_shared()) {
    return FinishOnExecutor(ctx, &acks_, response,
                            [broker, request] { return broker->ModifyAckDeadline(*request); });
  }
  return FinishUnary(ctx, broker->ModifyAckDeadline(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::GetEventHistory(
    grpc::CallbackServerContext* ctx, const v1::GetEventHistoryRequest* request,
    v1::GetEventHistoryResponse* response) {
  return FinishOnExecutor(ctx, &slow_, response, [this, ctx, request] {
    using R = absl::StatusOr<v1::GetEventHistoryResponse>;
    absl::StatusOr<Principal> caller = AuthorizeCall(auth_, *ctx, "GetEventHistory");
    if (!caller.ok()) return R(caller.status());
    Broker* b = broker_->get();
    if (b == nullptr) return R(BrokerSlot::NotReady());
    R history = b->GetEventHistory(*request);
    if (history.ok()) OnlyVisible(*caller, &*history);
    return history;
  });
}

grpc::ServerUnaryReactor* EventBrokerService::GetStats(grpc::CallbackServerContext* ctx,
                                                       const v1::GetStatsRequest* request,
                                                       v1::GetStatsResponse* response) {
  return FinishOnExecutor(ctx, &slow_, response, [this, ctx] {
    using R = absl::StatusOr<v1::GetStatsResponse>;
    absl::StatusOr<Principal> caller = AuthorizeCall(auth_, *ctx, "GetStats");
    if (!caller.ok()) return R(caller.status());
    Broker* b = broker_->get();
    if (b == nullptr) return R(BrokerSlot::NotReady());
    R stats = b->GetStats();
    if (stats.ok()) OnlyVisible(*caller, &*stats);
    return stats;
  });
}

grpc::ServerUnaryReactor* EventBrokerService::ListDeadLetters(
    grpc::CallbackServerContext* ctx, const v1::ListDeadLettersRequest* request,
    v1::ListDeadLettersResponse* response) {
  return FinishOnExecutor(ctx, &slow_, response, [this, ctx, request] {
    using R = absl::StatusOr<v1::ListDeadLettersResponse>;
    absl::StatusOr<Principal> caller = AuthorizeCall(auth_, *ctx, "ListDeadLetters");
    if (!caller.ok()) return R(caller.status());
    if (absl::Status s = Denied(RequireGroup(*caller, request->group()), "ListDeadLetters");
        !s.ok()) {
      return R(s);
    }
    Broker* b = broker_->get();
    if (b == nullptr) return R(BrokerSlot::NotReady());
    R dead = b->ListDeadLetters(*request);
    if (dead.ok()) OnlyVisible(*caller, &*dead);
    return dead;
  });
}

grpc::ServerUnaryReactor* EventBrokerService::ReplayDeadLetters(
    grpc::CallbackServerContext* ctx, const v1::ReplayDeadLettersRequest* request,
    v1::ReplayDeadLettersResponse* response) {
  return FinishOnExecutor(ctx, &slow_, response, [this, ctx, request] {
    using R = absl::StatusOr<v1::ReplayDeadLettersResponse>;
    absl::StatusOr<Principal> caller =
        AuthorizeCall(auth_, *ctx, "ReplayDeadLetters", Scope::kAdmin);
    if (!caller.ok()) return R(caller.status());
    Broker* b = broker_->get();
    if (b == nullptr) return R(BrokerSlot::NotReady());
    return b->ReplayDeadLetters(*request);
  });
}

}  // namespace switchboard::broker
