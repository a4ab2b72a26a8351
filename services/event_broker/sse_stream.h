#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_SSE_STREAM_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_SSE_STREAM_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/common/admin_http.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/event_broker/broker.h"

namespace switchboard::broker {

struct SseConfig {
  // Streams open at once on this replica (each holds an admin HTTP thread).
  int max_streams = 64;
  // A comment line after this long without an event keeps proxies (and the
  // TLS terminator's idle timer) from closing the stream, and notices a
  // browser that went away.
  absl::Duration heartbeat = absl::Seconds(15);
  // Bytes of formatted events one write carries at most: the stream's whole
  // buffer. A reader that takes nothing for the admin server's write timeout
  // (10 s) is disconnected; meanwhile the subscription stops reading ahead.
  size_t max_write_bytes = 256 << 10;
  // Origins whose pages may read the stream (CORS), e.g. a shop's frontend
  // on its own domain; "*" for any. Empty: the broker's own origin only.
  std::vector<std::string> allow_origins;
};

struct SseMetrics {
  explicit SseMetrics(prometheus::Registry& registry);
  prometheus::Gauge& streams;
  prometheus::Counter& events;
  // {reason}: client_gone (a write failed: closed or too slow), ended (the
  // broker ended the subscription: shutdown), stopped (the server stops).
  prometheus::Family<prometheus::Counter>& disconnects;
};

// What a browser asked for: GET /api/events/stream?types=&correlation_id=
// &subject=&user_id= with an optional Last-Event-ID header (or
// last_event_id=, for a first connection that resumes).
struct SseRequest {
  std::vector<std::string> types;  // filters as in SubscribeRequest
  std::string correlation_id;
  std::string subject;
  std::string user_id;
  uint64_t last_event_id = 0;  // 0: from now on
  bool resume = false;
};
// INVALID_ARGUMENT naming the parameter for anything else.
absl::StatusOr<SseRequest> ParseSseRequest(const HttpRequest& req);

// One SSE frame: "event: <type>\nid: <seq>\ndata: <event as JSON>\n\n".
std::string FormatSseEvent(const events::v1::Event& event);

// Registers GET /api/events/stream (Server-Sent Events over a broadcast
// subscription of the broker). The caller needs subscribe scopes for the
// types asked (a bearer token may come as ?access_token=, since EventSource
// cannot send headers).
void RegisterEventStream(AdminHttpServer* http, BrokerSlot* slot, Authenticator* auth,
                         SseConfig config, SseMetrics* metrics);

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_SSE_STREAM_H_
