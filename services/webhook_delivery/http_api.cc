#include "services/webhook_delivery/http_api.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "libs/common/proto_json.h"

namespace switchboard::webhooks {
namespace {

constexpr char kPrefix[] = "/api/webhooks/";

// The body as the request message: protobuf's JSON mapping, where durations
// (retryDelay, timeout) may also be whole milliseconds as in the original
// design ({"retryDelay":5000}). A blank body is an empty message, so the
// service names the missing field.
absl::Status ParseBody(const std::string& body, google::protobuf::Message* message) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return absl::OkStatus();
  return JsonToProtoWithMillis(body, message);
}

std::string IdFromPath(const std::string& path) { return path.substr(std::string(kPrefix).size()); }

}  // namespace

void RegisterWebhookHttpApi(AdminHttpServer* http, WebhookCore* core) {
  http->Route("POST", "/api/webhooks/register", Scope::kWebhooksAdmin,
              [core](const HttpRequest& req) {
                v1::RegisterWebhookRequest r;
                if (absl::Status s = ParseBody(req.body, &r); !s.ok()) return ErrorResponse(s);
                HttpResponse resp = JsonAnswer(core->Register(r));
                if (resp.status == 200) resp.status = 201;
                return resp;
              });
  http->Route("GET", kPrefix, Scope::kWebhooksRead, [core](const HttpRequest& req) {
    v1::GetWebhookRequest r;
    r.set_id(IdFromPath(req.path));
    return JsonAnswer(core->Get(r));
  });
  // UpdateWebhookRequest without the id, which is the path's; fields left
  // out keep their value.
  http->Route("PATCH", kPrefix, Scope::kWebhooksAdmin, [core](const HttpRequest& req) {
    v1::UpdateWebhookRequest r;
    if (absl::Status s = ParseBody(req.body, &r); !s.ok()) return ErrorResponse(s);
    std::string id = IdFromPath(req.path);
    if (!r.id().empty() && r.id() != id) {
      return ErrorResponse(absl::InvalidArgumentError(
          absl::StrCat("id: the body's '", r.id(), "' is not the path's '", id, "'")));
    }
    r.set_id(id);
    return JsonAnswer(core->Update(r));
  });
  http->Route("DELETE", kPrefix, Scope::kWebhooksAdmin, [core](const HttpRequest& req) {
    v1::UnregisterWebhookRequest r;
    r.set_id(IdFromPath(req.path));
    return JsonAnswer(core->Unregister(r));
  });
  http->Route("GET", "/api/webhooks", Scope::kWebhooksRead, [core](const HttpRequest&) {
    return JsonAnswer(core->List(v1::ListWebhooksRequest()));
  });
  http->Route("GET", "/api/webhooks/stats", Scope::kWebhooksRead,
              [core](const HttpRequest&) { return JsonAnswer(core->GetStats()); });
  http->Route("POST", "/api/webhooks/test", Scope::kWebhooksAdmin, [core](const HttpRequest& req) {
    v1::SendTestEventRequest r;
    if (absl::Status s = ParseBody(req.body, &r); !s.ok()) return ErrorResponse(s);
    return JsonAnswer(core->SendTestEvent(r));
  });
}

}  // namespace switchboard::webhooks
