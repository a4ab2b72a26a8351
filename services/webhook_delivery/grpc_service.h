#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_GRPC_SERVICE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_GRPC_SERVICE_H_

#include "services/webhook_delivery/webhook_core.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"

namespace switchboard::webhooks {

// gRPC edge of webhook-delivery: hands each call to WebhookCore.
class WebhookGrpcService final : public v1::WebhookService::CallbackService {
 public:
  explicit WebhookGrpcService(WebhookCore* core) : core_(core) {}
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
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_GRPC_SERVICE_H_
