#include "services/webhook_delivery/grpc_service.h"

#include "libs/common/grpc_server.h"

namespace switchboard::webhooks {

grpc::ServerUnaryReactor* WebhookGrpcService::RegisterWebhook(
    grpc::CallbackServerContext* ctx, const v1::RegisterWebhookRequest* request,
    v1::Webhook* response) {
  return FinishUnary(ctx, core_->Register(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::UnregisterWebhook(
    grpc::CallbackServerContext* ctx, const v1::UnregisterWebhookRequest* request,
    v1::UnregisterWebhookResponse* response) {
  return FinishUnary(ctx, core_->Unregister(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::ListWebhooks(grpc::CallbackServerContext* ctx,
                                                           const v1::ListWebhooksRequest* request,
                                                           v1::ListWebhooksResponse* response) {
  return FinishUnary(ctx, core_->List(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::GetWebhook(grpc::CallbackServerContext* ctx,
                                                         const v1::GetWebhookRequest* request,
                                                         v1::Webhook* response) {
  return FinishUnary(ctx, core_->Get(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::UpdateWebhook(grpc::CallbackServerContext* ctx,
                                                            const v1::UpdateWebhookRequest* request,
                                                            v1::Webhook* response) {
  return FinishUnary(ctx, core_->Update(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::RotateSecret(grpc::CallbackServerContext* ctx,
                                                           const v1::RotateSecretRequest* request,
                                                           v1::Webhook* response) {
  return FinishUnary(ctx, core_->RotateSecret(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::GetStats(grpc::CallbackServerContext* ctx,
                                                       const v1::GetStatsRequest*,
                                                       v1::GetStatsResponse* response) {
  return FinishUnary(ctx, core_->GetStats(), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::ListDeliveries(
    grpc::CallbackServerContext* ctx, const v1::ListDeliveriesRequest* request,
    v1::ListDeliveriesResponse* response) {
  return FinishUnary(ctx, core_->ListDeliveries(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::RedeliverEvent(
    grpc::CallbackServerContext* ctx, const v1::RedeliverEventRequest* request,
    v1::RedeliverEventResponse* response) {
  return FinishUnary(ctx, core_->RedeliverEvent(*request), response);
}
grpc::ServerUnaryReactor* WebhookGrpcService::SendTestEvent(grpc::CallbackServerContext* ctx,
                                                            const v1::SendTestEventRequest* request,
                                                            v1::SendTestEventResponse* response) {
  return FinishUnary(ctx, core_->SendTestEvent(*request), response);
}

}  // namespace switchboard::webhooks
