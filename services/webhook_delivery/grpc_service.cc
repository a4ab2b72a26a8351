#include "services/webhook_delivery/grpc_service.h"

#include "libs/common/grpc_auth.h"
#include "libs/common/grpc_server.h"

namespace switchboard::webhooks {
namespace {

// Runs `fn` on `pool` and finishes the call from there (see the class
// comment); skipped when the call was cancelled while it waited, refused
// unless the caller has `scope` (checked on the pool: the token file may be
// read again).
template <typename Response, typename Fn>
grpc::ServerUnaryReactor* OnPool(grpc::CallbackServerContext* ctx, Executor* pool,
                                 Response* response, Authenticator* auth, const char* method,
                                 Scope::Kind scope, Fn fn) {
  return FinishOnExecutor(
      ctx, pool, response,
      [ctx, auth, method, scope, fn = std::move(fn)]() mutable -> absl::StatusOr<Response> {
        if (ctx->IsCancelled()) return absl::CancelledError("cancelled before it ran");
        if (auto caller = AuthorizeCall(auth, *ctx, method, scope); !caller.ok()) {
          return caller.status();
        }
        return fn();
      });
}

}  // namespace

WebhookGrpcService::WebhookGrpcService(WebhookCore* core, WebhookGrpcServiceOptions options)
    : core_(core),
      auth_(options.auth),
      registrations_("sb-wh-register", options.threads, options.max_queued),
      queries_("sb-wh-rpc", options.threads, options.max_queued) {}

grpc::ServerUnaryReactor* WebhookGrpcService::RegisterWebhook(
    grpc::CallbackServerContext* ctx, const v1::RegisterWebhookRequest* request,
    v1::Webhook* response) {
  return OnPool(ctx, &registrations_, response, auth_, "RegisterWebhook", Scope::kWebhooksAdmin,
                [this, request] { return core_->Register(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::UnregisterWebhook(
    grpc::CallbackServerContext* ctx, const v1::UnregisterWebhookRequest* request,
    v1::UnregisterWebhookResponse* response) {
  return OnPool(ctx, &queries_, response, auth_, "UnregisterWebhook", Scope::kWebhooksAdmin,
                [this, request] { return core_->Unregister(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::ListWebhooks(grpc::CallbackServerContext* ctx,
                                                           const v1::ListWebhooksRequest* request,
                                                           v1::ListWebhooksResponse* response) {
  return OnPool(ctx, &queries_, response, auth_, "ListWebhooks", Scope::kWebhooksRead,
                [this, request] { return core_->List(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::GetWebhook(grpc::CallbackServerContext* ctx,
                                                         const v1::GetWebhookRequest* request,
                                                         v1::Webhook* response) {
  return OnPool(ctx, &queries_, response, auth_, "GetWebhook", Scope::kWebhooksRead,
                [this, request] { return core_->Get(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::UpdateWebhook(grpc::CallbackServerContext* ctx,
                                                            const v1::UpdateWebhookRequest* request,
                                                            v1::Webhook* response) {
  return OnPool(ctx, &registrations_, response, auth_, "UpdateWebhook", Scope::kWebhooksAdmin,
                [this, request] { return core_->Update(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::RotateSecret(grpc::CallbackServerContext* ctx,
                                                           const v1::RotateSecretRequest* request,
                                                           v1::Webhook* response) {
  return OnPool(ctx, &queries_, response, auth_, "RotateSecret", Scope::kWebhooksAdmin,
                [this, request] { return core_->RotateSecret(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::GetStats(grpc::CallbackServerContext* ctx,
                                                       const v1::GetStatsRequest*,
                                                       v1::GetStatsResponse* response) {
  return OnPool(ctx, &queries_, response, auth_, "GetStats", Scope::kWebhooksRead,
                [this] { return core_->GetStats(); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::ListDeliveries(
    grpc::CallbackServerContext* ctx, const v1::ListDeliveriesRequest* request,
    v1::ListDeliveriesResponse* response) {
  return OnPool(ctx, &queries_, response, auth_, "ListDeliveries", Scope::kWebhooksRead,
                [this, request] { return core_->ListDeliveries(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::RedeliverEvent(
    grpc::CallbackServerContext* ctx, const v1::RedeliverEventRequest* request,
    v1::RedeliverEventResponse* response) {
  return OnPool(ctx, &queries_, response, auth_, "RedeliverEvent", Scope::kWebhooksAdmin,
                [this, request] { return core_->RedeliverEvent(*request); });
}
grpc::ServerUnaryReactor* WebhookGrpcService::SendTestEvent(grpc::CallbackServerContext* ctx,
                                                            const v1::SendTestEventRequest* request,
                                                            v1::SendTestEventResponse* response) {
  return OnPool(ctx, &queries_, response, auth_, "SendTestEvent", Scope::kWebhooksAdmin,
                [this, request] { return core_->SendTestEvent(*request); });
}

}  // namespace switchboard::webhooks
