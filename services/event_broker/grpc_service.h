#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_GRPC_SERVICE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_GRPC_SERVICE_H_

#include <functional>
#include <vector>

#include "libs/common/auth.h"
#include "libs/common/executor.h"
#include "services/event_broker/broker.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"

namespace switchboard::broker {

// gRPC edge of the broker: each method hands the request to Broker and turns
// absl::Status into grpc::Status. Publishes complete from the broker's writer
// thread, so no gRPC thread waits on a commit.
// Publish and PublishBatch take raw bytes so that a request protobuf refuses
// (invalid UTF-8) is answered with INVALID_ARGUMENT naming the field, and is
// parsed onto an arena. Subscribe and SubscribeBatched write raw bytes: deliveries are built from
// the stored event bytes (delivery_codec.h).
using EventBrokerServiceBase = v1::EventBroker::WithRawCallbackMethod_Publish<
    v1::EventBroker::WithRawCallbackMethod_PublishBatch<
        v1::EventBroker::WithRawCallbackMethod_Subscribe<
            v1::EventBroker::WithRawCallbackMethod_SubscribeBatched<
                v1::EventBroker::CallbackService>>>>;

class EventBrokerService final : public EventBrokerServiceBase {
 public:
  // `auth` (null: everyone may call everything) must outlive the service.
  explicit EventBrokerService(BrokerSlot* broker, Authenticator* auth = nullptr)
      : broker_(broker),
        auth_(auth),
        slow_("sb-grpc-slow", 2, 256),
        acks_("sb-grpc-acks", 4, 16384) {}

  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* ctx,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* PublishBatch(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Subscribe(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* SubscribeBatched(
      grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest* request,
                                v1::AckResponse* response) override;
  grpc::ServerUnaryReactor* Nack(grpc::CallbackServerContext* ctx, const v1::NackRequest* request,
                                 v1::NackResponse* response) override;
  grpc::ServerUnaryReactor* ModifyAckDeadline(grpc::CallbackServerContext* ctx,
                                              const v1::ModifyAckDeadlineRequest* request,
                                              v1::ModifyAckDeadlineResponse* response) override;
  grpc::ServerUnaryReactor* GetEventHistory(grpc::CallbackServerContext* ctx,
                                            const v1::GetEventHistoryRequest* request,
                                            v1::GetEventHistoryResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* ListDeadLetters(grpc::CallbackServerContext* ctx,
                                            const v1::ListDeadLettersRequest* request,
                                            v1::ListDeadLettersResponse* response) override;
  grpc::ServerUnaryReactor* ReplayDeadLetters(grpc::CallbackServerContext* ctx,
                                              const v1::ReplayDeadLettersRequest* request,
                                              v1::ReplayDeadLettersResponse* response) override;

 private:
  // The caller may publish every one of `events` (publish:<type>).
  absl::Status AuthorizePublish(grpc::CallbackServerContext* ctx, absl::string_view method,
                                absl::Span<internal::RawEvent* const> events);
  // The caller may subscribe to the parsed request's types and group.
  std::function<absl::Status(const v1::SubscribeRequest&)> SubscribeGate(
      grpc::CallbackServerContext* ctx, const char* method);
  // The caller holds some subscribe scope for `group` (acks, dead letters).
  absl::Status AuthorizeGroup(grpc::CallbackServerContext* ctx, absl::string_view method,
                              absl::string_view group);
  absl::Status Denied(absl::Status status, absl::string_view method);

  BrokerSlot* const broker_;
  Authenticator* const auth_;
  // History, stats and dead letters query the store (and Replay waits for
  // the writer): they run here, never on a gRPC reaction thread.
  Executor slow_;
  // On a shared store acks, nacks and lease changes are store round trips:
  // they run here, never on a gRPC reaction thread.
  Executor acks_;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_GRPC_SERVICE_H_
