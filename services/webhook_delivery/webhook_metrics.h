#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_METRICS_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_METRICS_H_

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace switchboard::webhooks {

// Every metric of webhook-delivery, registered on main's registry.
struct WebhookMetrics {
  explicit WebhookMetrics(prometheus::Registry& r)
      : deliveries(prometheus::BuildCounter()
                       .Name("switchboard_webhooks_deliveries_total")
                       .Help("Deliveries finished, by outcome (delivered, failed) and event type.")
                       .Register(r)),
        attempts(prometheus::BuildCounter()
                     .Name("switchboard_webhooks_attempts_total")
                     .Help("HTTP attempts, by result class (2xx, 4xx, 5xx, timeout, error).")
                     .Register(r)),
        latency(prometheus::BuildHistogram()
                    .Name("switchboard_webhooks_attempt_latency_seconds")
                    .Help("Time of one HTTP attempt, request to response.")
                    .Register(r)
                    .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01,
                                                                     0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                     2.5, 5, 10, 30})),
        queue_depth(prometheus::BuildGauge()
                        .Name("switchboard_webhooks_queue_depth")
                        .Help("Pending deliveries: due now, or scheduled for a later retry.")
                        .Register(r)),
        endpoints_disabled(prometheus::BuildCounter()
                               .Name("switchboard_webhooks_endpoints_disabled_total")
                               .Help("Endpoints disabled because they answered 410 Gone.")
                               .Register(r)
                               .Add({})),
        registered(prometheus::BuildGauge()
                       .Name("switchboard_webhooks_registered")
                       .Help("Registered webhooks, by state (active, disabled).")
                       .Register(r)),
        in_flight(prometheus::BuildGauge()
                      .Name("switchboard_webhooks_in_flight")
                      .Help("Deliveries this replica has claimed and not yet answered.")
                      .Register(r)
                      .Add({})),
        throttled(prometheus::BuildCounter()
                      .Name("switchboard_webhooks_rate_limited_total")
                      .Help("Claims that left an endpoint's due deliveries waiting for its "
                            "rate limit.")
                      .Register(r)
                      .Add({})) {}

  prometheus::Family<prometheus::Counter>& deliveries;  // {outcome, event_type}
  prometheus::Family<prometheus::Counter>& attempts;    // {result}
  prometheus::Histogram& latency;
  prometheus::Family<prometheus::Gauge>& queue_depth;  // {state: due, scheduled}
  prometheus::Counter& endpoints_disabled;
  prometheus::Family<prometheus::Gauge>& registered;  // {state}
  prometheus::Gauge& in_flight;
  prometheus::Counter& throttled;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_METRICS_H_
