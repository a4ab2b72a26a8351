#include "services/event_broker/http_api.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_json.h"
#include "services/event_broker/visibility.h"

namespace switchboard::broker {
namespace {

absl::StatusOr<v1::GetEventHistoryRequest> HistoryRequestFromQuery(
    const std::map<std::string, std::string>& query) {
  v1::GetEventHistoryRequest req;
  for (const auto& [key, value] : query) {
    if (key == "limit") {
      uint32_t limit;
      if (!absl::SimpleAtoi(value, &limit)) {
        return absl::InvalidArgumentError(absl::StrCat("limit: '", value, "' is not a number"));
      }
      req.set_limit(limit);
    } else if (key == "correlation_id" || key == "correlationId") {
      req.set_correlation_id(value);
    } else if (key == "subject") {
      req.set_subject(value);
    } else if (key == "type" || key == "types") {
      for (absl::string_view t : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        req.add_types(std::string(t));
      }
    } else if (key == "before_sequence" || key == "beforeSequence") {
      uint64_t seq;
      if (!absl::SimpleAtoi(value, &seq)) {
        return absl::InvalidArgumentError(
            absl::StrCat("before_sequence: '", value, "' is not a number"));
      }
      req.set_before_sequence(seq);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          key,
          ": unknown query parameter (limit, correlation_id, subject, type, before_sequence)"));
    }
  }
  return req;
}

// The handler with the broker, or 503 while there is none yet.
template <typename Handler>
HttpHandler WithBroker(BrokerSlot* slot, Handler handler) {
  return [slot, handler](const HttpRequest& req) {
    Broker* broker = slot->get();
    if (broker == nullptr) return ErrorResponse(BrokerSlot::NotReady());
    return handler(broker, req);
  };
}

}  // namespace

void RegisterBrokerHttpApi(AdminHttpServer* http, BrokerSlot* slot, Authenticator* auth) {
  http->Route("GET", "/api/events/stats",
              WithBroker(slot, [](Broker* broker, const HttpRequest& req) {
                absl::StatusOr<v1::GetStatsResponse> stats = broker->GetStats();
                if (stats.ok()) OnlyVisible(req.caller, &*stats);
                return JsonAnswer(stats);
              }));

  http->Route("GET", "/api/events/history",
              WithBroker(slot, [](Broker* broker, const HttpRequest& req) {
                absl::StatusOr<v1::GetEventHistoryRequest> r = HistoryRequestFromQuery(req.query);
                if (!r.ok()) return ErrorResponse(r.status());
                absl::StatusOr<v1::GetEventHistoryResponse> history = broker->GetEventHistory(*r);
                if (history.ok()) OnlyVisible(req.caller, &*history);
                return JsonAnswer(history);
              }));

  // Publishes the event in the body (protobuf JSON of Event), or a sample
  // test event when the body is empty.
  http->Route(
      "POST", "/api/events/test", WithBroker(slot, [auth](Broker* broker, const HttpRequest& req) {
        events::v1::Event event;
        if (req.body.find_first_not_of(" \t\r\n") != std::string::npos) {
          if (absl::Status s = JsonToProto(req.body, &event); !s.ok()) return ErrorResponse(s);
        } else {
          event.set_type("system.test");
          event.set_source("event-broker");
          (*event.mutable_data()->mutable_fields())["message"].set_string_value("test event");
        }
        if (absl::Status s = RequirePublish(req.caller, event.type()); !s.ok()) {
          if (auth != nullptr) s = auth->Denied(std::move(s), "POST /api/events/test");
          return ErrorResponse(s);
        }
        absl::StatusOr<std::vector<PublishResult>> r = broker->PublishAndWait({std::move(event)});
        if (!r.ok()) return ErrorResponse(r.status());
        v1::PublishResponse resp;
        resp.set_id(r->front().id);
        resp.set_sequence(r->front().sequence);
        resp.set_duplicate(r->front().duplicate);
        return HttpResponse{200, "application/json", ProtoToJson(resp)};
      }));

  http->Route(
      "GET", "/health/events", WithBroker(slot, [](Broker* broker, const HttpRequest&) {
        absl::StatusOr<v1::GetStatsResponse> stats = broker->GetStats();
        if (!stats.ok()) {
          return HttpResponse{503, "application/json",
                              absl::StrCat("{\"status\":\"unhealthy\",\"error\":",
                                           JsonQuote(stats.status().ToString()), "}")};
        }
        // The webhook side as the broker sees it: its consumer group.
        std::string webhooks = "{\"group\":\"webhook-delivery\",\"connected\":false}";
        for (const v1::GroupStats& g : stats->groups()) {
          if (g.name() != "webhook-delivery") continue;
          webhooks = absl::StrCat(
              "{\"group\":\"webhook-delivery\",\"connected\":", g.members() > 0 ? "true" : "false",
              ",\"pending\":", g.pending(), ",\"lag\":", g.lag(),
              ",\"deadLettered\":", g.dead_lettered(), "}");
        }
        return HttpResponse{
            200, "application/json",
            absl::StrCat("{\"status\":\"healthy\",\"eventBus\":{\"active\":true,\"subscribers\":",
                         stats->active_subscribers(), ",\"totalEvents\":", stats->total_events(),
                         ",\"lastSequence\":", stats->last_sequence(), "},\"webhooks\":", webhooks,
                         "}")};
      }));
}

}  // namespace switchboard::broker
