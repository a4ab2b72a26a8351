#include "services/event_broker/grpc_service.h"

#include "libs/common/grpc_server.h"
#include "libs/common/wire_check.h"

namespace switchboard::broker {
namespace {

// Finishes a unary call with the outcome of a synchronous broker call.
template <typename Response>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, absl::StatusOr<Response> result,
                                 Response* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
  } else {
    *response = *std::move(result);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

void ToProto(const PublishResult& r, v1::PublishResponse* out) {
  out->set_id(r.id);
  out->set_sequence(r.sequence);
  out->set_duplicate(r.duplicate);
}

// One Subscribe stream. The broker calls OnReady/OnEnd from its threads;
// gRPC calls the On* reactions. At most one write is in flight, so a client
// that stops reading holds one delivery here and its bounded buffer in the
// broker, never more.
class SubscribeReactor final : public grpc::ServerWriteReactor<v1::Delivery>,
                               public SubscriptionSink {
 public:
  SubscribeReactor(Broker* broker, const v1::SubscribeRequest* request) {
    absl::StatusOr<std::shared_ptr<Subscription>> sub = broker->Subscribe(*request, this);
    if (!sub.ok()) {
      absl::MutexLock lock(&mu_);
      finished_ = true;
      Finish(ToGrpcStatus(sub.status()));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      sub_ = *std::move(sub);
    }
    // Headers now, so the client knows the subscription is in place.
    StartSendInitialMetadata();
    OnReady();
  }

  ~SubscribeReactor() override { delivery_.unsafe_arena_release_event(); }

  void OnReady() override {
    absl::MutexLock lock(&mu_);
    PumpLocked();
  }

  void OnEnd(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || ending_) return;
    ending_ = true;
    end_status_ = ToGrpcStatus(status);
    if (!writing_) {
      finished_ = true;
      Finish(end_status_);
    }
  }

  void OnSendInitialMetadataDone(bool ok) override {}

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    delivery_.unsafe_arena_release_event();
    current_.reset();
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
    if (!finished_) {
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
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || ending_ || sub_ == nullptr) return;
    std::optional<Outgoing> next = sub_->Next();
    if (!next.has_value()) return;
    current_ = std::move(next->event);
    // The committed event is shared and immutable: lend it to the message
    // instead of copying it for every subscriber. Released in OnWriteDone.
    delivery_.unsafe_arena_set_allocated_event(const_cast<events::v1::Event*>(&current_->event));
    delivery_.set_delivery_attempt(next->attempt);
    delivery_.set_ack_id(std::move(next->ack_id));
    writing_ = true;
    // More is waiting: let gRPC coalesce this write with the next ones
    // instead of flushing each small message on its own.
    grpc::WriteOptions options;
    if (sub_->HasMore()) options.set_buffer_hint();
    StartWrite(&delivery_, options);
  }

  absl::Mutex mu_;
  std::shared_ptr<Subscription> sub_ ABSL_GUARDED_BY(mu_);
  v1::Delivery delivery_ ABSL_GUARDED_BY(mu_);
  EventPtr current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerUnaryReactor* EventBrokerService::Publish(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* request_bytes,
                                                      grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  v1::PublishRequest request;
  if (absl::Status s = ParseRequest(*request_bytes, &request); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (!request.has_event()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "event: required"));
    return reactor;
  }
  std::vector<events::v1::Event> events(1);
  events[0].Swap(request.mutable_event());
  broker_->Publish(std::move(events),
                   [reactor, response_bytes](absl::StatusOr<std::vector<PublishResult>> r) {
                     if (!r.ok()) {
                       reactor->Finish(ToGrpcStatus(r.status()));
                       return;
                     }
                     v1::PublishResponse response;
                     ToProto(r->front(), &response);
                     SerializeResponse(response, response_bytes);
                     reactor->Finish(grpc::Status::OK);
                   });
  return reactor;
}

grpc::ServerUnaryReactor* EventBrokerService::PublishBatch(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* request_bytes,
                                                           grpc::ByteBuffer* response_bytes) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  v1::PublishBatchRequest request;
  if (absl::Status s = ParseRequest(*request_bytes, &request); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  std::vector<events::v1::Event> events(request.events_size());
  for (int i = 0; i < request.events_size(); ++i) events[i].Swap(request.mutable_events(i));
  broker_->Publish(std::move(events),
                   [reactor, response_bytes](absl::StatusOr<std::vector<PublishResult>> r) {
                     if (!r.ok()) {
                       reactor->Finish(ToGrpcStatus(r.status()));
                       return;
                     }
                     v1::PublishBatchResponse response;
                     for (const PublishResult& p : *r) ToProto(p, response.add_results());
                     SerializeResponse(response, response_bytes);
                     reactor->Finish(grpc::Status::OK);
                   });
  return reactor;
}

grpc::ServerWriteReactor<v1::Delivery>* EventBrokerService::Subscribe(
    grpc::CallbackServerContext* ctx, const v1::SubscribeRequest* request) {
  return new SubscribeReactor(broker_, request);
}

grpc::ServerUnaryReactor* EventBrokerService::Ack(grpc::CallbackServerContext* ctx,
                                                  const v1::AckRequest* request,
                                                  v1::AckResponse* response) {
  return Answer(ctx, broker_->Ack(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::Nack(grpc::CallbackServerContext* ctx,
                                                   const v1::NackRequest* request,
                                                   v1::NackResponse* response) {
  return Answer(ctx, broker_->Nack(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::ModifyAckDeadline(
    grpc::CallbackServerContext* ctx, const v1::ModifyAckDeadlineRequest* request,
    v1::ModifyAckDeadlineResponse* response) {
  return Answer(ctx, broker_->ModifyAckDeadline(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::GetEventHistory(
    grpc::CallbackServerContext* ctx, const v1::GetEventHistoryRequest* request,
    v1::GetEventHistoryResponse* response) {
  return Answer(ctx, broker_->GetEventHistory(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::GetStats(grpc::CallbackServerContext* ctx,
                                                       const v1::GetStatsRequest* request,
                                                       v1::GetStatsResponse* response) {
  return Answer(ctx, broker_->GetStats(), response);
}

grpc::ServerUnaryReactor* EventBrokerService::ListDeadLetters(
    grpc::CallbackServerContext* ctx, const v1::ListDeadLettersRequest* request,
    v1::ListDeadLettersResponse* response) {
  return Answer(ctx, broker_->ListDeadLetters(*request), response);
}

grpc::ServerUnaryReactor* EventBrokerService::ReplayDeadLetters(
    grpc::CallbackServerContext* ctx, const v1::ReplayDeadLettersRequest* request,
    v1::ReplayDeadLettersResponse* response) {
  return Answer(ctx, broker_->ReplayDeadLetters(*request), response);
}

}  // namespace switchboard::broker
