#include "services/event_broker/sse_stream.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/auth.h"
#include "libs/common/proto_json.h"

namespace switchboard::broker {
namespace {

// Wakes the stream's thread: the subscription has something, the broker
// ended it, or the admin server stops.
class SseSink : public SubscriptionSink {
 public:
  enum class Wake { kReady, kEnded, kStopped, kIdle };

  void OnReady() override {
    absl::MutexLock lock(&mu_);
    ready_ = true;
  }
  void OnEnd(absl::Status) override {
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }
  // Waits for a reason to act, at most `idle`.
  Wake Wait(absl::Duration idle) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &SseSink::Woken), idle);
    if (stopped_) return Wake::kStopped;
    if (ended_) return Wake::kEnded;
    if (!ready_) return Wake::kIdle;
    ready_ = false;
    return Wake::kReady;
  }

 private:
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ready_ || ended_ || stopped_; }

  absl::Mutex mu_;
  bool ready_ ABSL_GUARDED_BY(mu_) = true;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

bool Wanted(const events::v1::Event& ev, const SseRequest& r) {
  return (r.correlation_id.empty() || ev.correlation_id() == r.correlation_id) &&
         (r.subject.empty() || ev.subject() == r.subject) &&
         (r.user_id.empty() || ev.user_id() == r.user_id);
}

absl::Status ParseSequence(absl::string_view name, absl::string_view value, uint64_t* out) {
  if (!absl::SimpleAtoi(value, out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": '", value.substr(0, 40), "' is not a sequence number"));
  }
  return absl::OkStatus();
}

// Streams until the reader goes, the broker ends the subscription or the
// server stops; returns the reason (a label of disconnects).
const char* Pump(Subscription& sub, SseSink& sink, HttpStream* stream, const SseRequest& request,
                 const SseConfig& config, SseMetrics* metrics) {
  auto gone = [stream] { return stream->Cancelled() ? "stopped" : "client_gone"; };
  std::string batch;
  // Heartbeats follow the last write, not the last wake-up: a stream whose
  // filter drops every event still gets them.
  absl::Time last_write = absl::Now();
  for (;;) {
    batch.clear();
    uint64_t sent = 0;
    while (batch.size() < config.max_write_bytes) {
      std::optional<Outgoing> next = sub.Next();
      if (!next.has_value()) break;
      events::v1::Event ev = next->event->Parse();
      if (!Wanted(ev, request)) continue;
      batch += FormatSseEvent(ev);
      ++sent;
    }
    if (!batch.empty()) {
      if (!stream->Write(batch)) return gone();
      last_write = absl::Now();
      metrics->events.Increment(static_cast<double>(sent));
      // A full batch: more may be waiting without a new OnReady.
      if (batch.size() >= config.max_write_bytes) continue;
    }
    absl::Duration until_heartbeat = config.heartbeat - (absl::Now() - last_write);
    SseSink::Wake wake =
        until_heartbeat > absl::ZeroDuration() ? sink.Wait(until_heartbeat) : SseSink::Wake::kIdle;
    if (wake == SseSink::Wake::kStopped) return "stopped";
    if (wake == SseSink::Wake::kEnded) return "ended";
    if (absl::Now() - last_write >= config.heartbeat) {
      if (!stream->Write(": heartbeat\n\n")) return gone();
      last_write = absl::Now();
    }
  }
}

// The CORS headers for a page of `origin` (none when it is not allowed: the
// browser then keeps the answer from the page).
std::vector<std::pair<std::string, std::string>> CorsHeaders(const HttpRequest& req,
                                                             const SseConfig& config) {
  auto origin = req.headers.find("origin");
  if (origin == req.headers.end()) return {};
  for (const std::string& allowed : config.allow_origins) {
    if (allowed == "*" || allowed == origin->second) {
      return {{"Access-Control-Allow-Origin", allowed == "*" ? "*" : origin->second},
              {"Vary", "Origin"}};
    }
  }
  return {};
}

}  // namespace

SseMetrics::SseMetrics(prometheus::Registry& registry)
    : streams(prometheus::BuildGauge()
                  .Name("switchboard_broker_sse_streams")
                  .Help("Server-Sent Events streams open on the admin port")
                  .Register(registry)
                  .Add({})),
      events(prometheus::BuildCounter()
                 .Name("switchboard_broker_sse_events_total")
                 .Help("Events written to Server-Sent Events streams")
                 .Register(registry)
                 .Add({})),
      disconnects(prometheus::BuildCounter()
                      .Name("switchboard_broker_sse_disconnects_total")
                      .Help("Server-Sent Events streams ended, by reason (client_gone: the "
                            "reader closed or read nothing for 10 s)")
                      .Register(registry)) {
  for (const char* reason : {"client_gone", "ended", "stopped"})
    disconnects.Add({{"reason", reason}});
}

absl::StatusOr<SseRequest> ParseSseRequest(const HttpRequest& req) {
  SseRequest r;
  for (const auto& [key, value] : req.query) {
    if (key == "types" || key == "type") {
      for (absl::string_view t : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        r.types.emplace_back(t);
      }
    } else if (key == "correlation_id" || key == "correlationId") {
      r.correlation_id = value;
    } else if (key == "subject") {
      r.subject = value;
    } else if (key == "user_id" || key == "userId") {
      r.user_id = value;
    } else if (key == "last_event_id") {
      if (absl::Status s = ParseSequence(key, value, &r.last_event_id); !s.ok()) return s;
      r.resume = true;
    } else if (key != "access_token") {
      return absl::InvalidArgumentError(absl::StrCat(
          key.substr(0, 40),
          ": unknown query parameter (types, correlation_id, subject, user_id, last_event_id)"));
    }
  }
  // A browser's reconnection: the id of the last event it received.
  if (auto h = req.headers.find("last-event-id"); h != req.headers.end() && !h->second.empty()) {
    if (absl::Status s = ParseSequence("Last-Event-ID", h->second, &r.last_event_id); !s.ok()) {
      return s;
    }
    r.resume = true;
  }
  return r;
}

std::string FormatSseEvent(const events::v1::Event& event) {
  // Types are [a-z0-9_.] and the JSON is one line (strings escape newlines),
  // so no field can break the framing.
  return absl::StrCat("event: ", event.type(), "\nid: ", event.sequence(),
                      "\ndata: ", ProtoToJson(event), "\n\n");
}

void RegisterEventStream(AdminHttpServer* http, BrokerSlot* slot, Authenticator* auth,
                         SseConfig config, SseMetrics* metrics) {
  http->StreamRoute(
      "GET", "/api/events/stream", Scope::kSubscribe, config.max_streams, /*query_token=*/true,
      [slot, auth, config, metrics](const HttpRequest& req,
                                    HttpStream* stream) -> std::optional<HttpResponse> {
        std::vector<std::pair<std::string, std::string>> cors = CorsHeaders(req, config);
        auto refuse = [&cors](const absl::Status& status) {
          HttpResponse r = ErrorResponse(status);
          r.headers.insert(r.headers.end(), cors.begin(), cors.end());
          return r;
        };
        Broker* broker = slot->get();
        if (broker == nullptr) return refuse(BrokerSlot::NotReady());
        absl::StatusOr<SseRequest> parsed = ParseSseRequest(req);
        if (!parsed.ok()) return refuse(parsed.status());
        absl::Status allowed = RequireSubscribe(req.caller, parsed->types, "");
        if (auth != nullptr) allowed = auth->Denied(allowed, "GET /api/events/stream");
        if (!allowed.ok()) return refuse(allowed);

        v1::SubscribeRequest sub_req;
        for (const std::string& t : parsed->types) sub_req.add_types(t);
        if (parsed->resume) {
          sub_req.set_start(v1::SubscribeRequest::SEQUENCE);
          sub_req.set_start_sequence(parsed->last_event_id + 1);
        }
        SseSink sink;
        absl::StatusOr<std::shared_ptr<Subscription>> sub = broker->Subscribe(sub_req, &sink);
        if (!sub.ok() && parsed->resume &&
            sub.status().code() == absl::StatusCode::kInvalidArgument &&
            parsed->last_event_id >= broker->last_sequence()) {
          // An id from the future (the log was reset): from now on.
          sub_req.set_start(v1::SubscribeRequest::LATEST);
          sub = broker->Subscribe(sub_req, &sink);
        }
        if (!sub.ok()) return refuse(sub.status());
        ScopedCancelHook hook(stream, [&sink] { sink.Stop(); });
        metrics->streams.Increment();
        const char* reason = "client_gone";
        cors.emplace_back("X-Accel-Buffering", "no");  // nginx: pass events on at once
        if (stream->Begin(200, "text/event-stream", cors) &&
            stream->Write("retry: 2000\n: connected\n\n")) {
          reason = Pump(**sub, sink, stream, *parsed, config, metrics);
        }
        (*sub)->Close();
        metrics->streams.Decrement();
        metrics->disconnects.Add({{"reason", reason}}).Increment();
        return std::nullopt;
      });
}

}  // namespace switchboard::broker
