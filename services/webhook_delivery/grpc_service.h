#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_GRPC_SERVICE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_GRPC_SERVICE_H_

#include "libs/common/auth.h"
#include "libs/common/executor.h"
#include "services/webhook_delivery/webhook_core.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"

namespace switchboard::webhooks {

struct WebhookGrpcServiceOptions {
  // Threads and queue of each of the two pools below. A full queue answers
  // RESOURCE_EXHAUSTED.
  int threads = 4;
  size_t max_queued = 256;
  // Who may call what (null: everyone everything); outlives the service.
  Authenticator* auth = nullptr;
};

// gRPC edge of webhook-delivery: hands each call to WebhookCore.
//
// gRPC's reactions must never block, and every call here may: Register and
// Update resolve the URL (DNS can hang); the others read or write SQLite or
// take the registry's lock, which is held across its SQLite writes. So each
// call runs on a pool of the service's own and finishes from there:
// - `registrations_`: RegisterWebhook, UpdateWebhook (DNS);
// - `queries_`: everything else,
// so that hanging lookups, which can fill their pool, never delay the reads,
// stats and deliveries. A call whose client gave up (or that shutdown
// cancelled) before its turn is not run.
//
// Declare the service after the WebhookCore it uses: its destructor runs
// what was queued, then joins.
class WebhookGrpcService final : public v1::WebhookService::CallbackService {
 public:
  explicit WebhookGrpcService(WebhookCore* core, WebhookGrpcServiceOptions options = {});
  grpc::ServerUnaryReactor* RegisterWebhook(grpc::CallbackServerContext* ctx,
                                            const v1::RegisterWebhookRequest* request,
                                            v1::Webhook* response) override;
  grpc::ServerUnaryReactor* UnregisterWebhook(grpc::CallbackServerContext* ctx,
                                              const v1::UnregisterWebhookRequest* request,
                                              v1::UnregisterWebhookResponse* response) override;
  grpc::ServerUnaryReactor* ListWebhooks(grpc::CallbackServerContext* ctx,
                                         const v1::ListWebhooksRequest* request,
                                         v1::ListWebhooksResponse* response) override;
  grpc::ServerUnaryReactor* GetWebhook(grpc::CallbackServerContext* ctx,
                                       const v1::GetWebhookRequest* request,
                                       v1::Webhook* response) override;
  grpc::ServerUnaryReactor* UpdateWebhook(grpc::CallbackServerContext* ctx,
                                          const v1::UpdateWebhookRequest* request,
                                          v1::Webhook* response) override;
  grpc::ServerUnaryReactor* RotateSecret(grpc::CallbackServerContext* ctx,
                                         const v1::RotateSecretRequest* request,
                                         v1::Webhook* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* ListDeliveries(grpc::CallbackServerContext* ctx,
                                           const v1::ListDeliveriesRequest* request,
                                           v1::ListDeliveriesResponse* response) override;
  grpc::ServerUnaryReactor* RedeliverEvent(grpc::CallbackServerContext* ctx,
                                           const v1::RedeliverEventRequest* request,
                                           v1::RedeliverEventResponse* response) override;
  grpc::ServerUnaryReactor* SendTestEvent(grpc::CallbackServerContext* ctx,
                                          const v1::SendTestEventRequest* request,
                                          v1::SendTestEventResponse* response) override;

 private:
  WebhookCore* const core_;
  Authenticator* const auth_;
  Executor registrations_;
  Executor queries_;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_GRPC_SERVICE_H_
