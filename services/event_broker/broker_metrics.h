#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_METRICS_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_METRICS_H_

#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace switchboard::broker {

// Every metric of the event-broker, declared in one place and registered on
// the one registry that main() owns.
struct BrokerMetrics {
  explicit BrokerMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& events_published;  // {type}
  prometheus::Counter& duplicates;
  prometheus::Histogram& publish_latency;
  prometheus::Histogram& commit_latency;
  prometheus::Histogram& commit_events;
  prometheus::Counter& inline_commits;
  prometheus::Gauge& active_subscribers;
  prometheus::Gauge& storage_bytes;
  prometheus::Gauge& stored_events;
  prometheus::Gauge& last_sequence;
  prometheus::Family<prometheus::Gauge>& group_pending;         // {group}
  prometheus::Family<prometheus::Gauge>& group_lag;             // {group}
  prometheus::Family<prometheus::Counter>& group_redeliveries;  // {group}
  prometheus::Family<prometheus::Counter>& group_dead_letters;  // {group}
  prometheus::Family<prometheus::Counter>& events_delivered;    // {mode}
  prometheus::Counter& retention_deleted;
  prometheus::Counter& subscribers_dropped;
  prometheus::Counter& publishes_refused;
  prometheus::Counter& group_ops_dropped;
  prometheus::Gauge& queued_publish_bytes;
  // Shared store: appends the tail thread delivered from this replica's own
  // commits, and those it read from the store (other replicas').
  prometheus::Family<prometheus::Counter>& tail_events;  // {source}
  prometheus::Counter& tail_local;
  prometheus::Counter& tail_read;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_BROKER_METRICS_H_
