#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_HTTP_API_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_HTTP_API_H_

#include "libs/common/admin_http.h"
#include "services/webhook_delivery/webhook_core.h"

namespace switchboard::webhooks {

// The JSON API of SPEC §6 over the same WebhookCore calls as gRPC:
// POST /api/webhooks/register, DELETE /api/webhooks/{id}, GET /api/webhooks,
// GET /api/webhooks/stats, POST /api/webhooks/test; and GET and PATCH
// /api/webhooks/{id} (GetWebhook, UpdateWebhook). Bodies are protobuf JSON;
// retryDelay and timeout also take whole milliseconds, as in the original
// design's example ({"retryDelay":5000,"timeout":30000}).
void RegisterWebhookHttpApi(AdminHttpServer* http, WebhookCore* core);

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_HTTP_API_H_
