#include "services/webhook_delivery/http_api.h"

#include "libs/common/proto_json.h"

namespace switchboard::webhooks {

void RegisterWebhookHttpApi(AdminHttpServer* http, WebhookCore* core) {
  http->Route("POST", "/api/webhooks/register", [core](const HttpRequest& req) {
    v1::RegisterWebhookRequest r;
    if (absl::Status s = JsonToProto(req.body, &r); !s.ok()) return ErrorResponse(s);
    HttpResponse resp = JsonAnswer(core->Register(r));
    if (resp.status == 200) resp.status = 201;
    return resp;
  });
  http->Route("DELETE", "/api/webhooks/", [core](const HttpRequest& req) {
    v1::UnregisterWebhookRequest r;
    r.set_id(req.path.substr(std::string("/api/webhooks/").size()));
    return JsonAnswer(core->Unregister(r));
  });
  http->Route("GET", "/api/webhooks", [core](const HttpRequest&) {
    return JsonAnswer(core->List(v1::ListWebhooksRequest()));
  });
  http->Route("GET", "/api/webhooks/stats",
              [core](const HttpRequest&) { return JsonAnswer(core->GetStats()); });
  http->Route("POST", "/api/webhooks/test", [core](const HttpRequest& req) {
    v1::SendTestEventRequest r;
    if (absl::Status s = JsonToProto(req.body, &r); !s.ok()) return ErrorResponse(s);
    return JsonAnswer(core->SendTestEvent(r));
  });
}

}  // namespace switchboard::webhooks
