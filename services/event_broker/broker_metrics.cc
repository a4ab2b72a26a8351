#include "services/event_broker/broker_metrics.h"

namespace switchboard::broker {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  return *b;
}

}  // namespace

BrokerMetrics::BrokerMetrics(prometheus::Registry& r)
    : events_published(prometheus::BuildCounter()
                           .Name("switchboard_broker_events_published_total")
                           .Help("Events appended to the log, by type.")
                           .Register(r)),
      duplicates(prometheus::BuildCounter()
                     .Name("switchboard_broker_duplicate_publishes_total")
                     .Help("Publishes answered from the dedupe window (same source+id).")
                     .Register(r)
                     .Add({})),
      publish_latency(prometheus::BuildHistogram()
                          .Name("switchboard_broker_publish_latency_seconds")
                          .Help("Time from receiving a publish to its durable ack.")
                          .Register(r)
                          .Add({}, LatencyBuckets())),
      commit_latency(prometheus::BuildHistogram()
                         .Name("switchboard_broker_store_commit_latency_seconds")
                         .Help("Time of one store commit (a group of publishes and acks).")
                         .Register(r)
                         .Add({}, LatencyBuckets())),
      commit_events(prometheus::BuildHistogram()
                        .Name("switchboard_broker_store_commit_events")
                        .Help("Events appended per store commit (group commit size).")
                        .Register(r)
                        .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 5, 10, 50, 100, 500,
                                                                         1000, 5000})),
      inline_commits(prometheus::BuildCounter()
                         .Name("switchboard_broker_inline_commits_total")
                         .Help("Store commits of a lone publish made on its RPC's own thread "
                               "(nothing else queued), not handed to the writer thread.")
                         .Register(r)
                         .Add({})),
      active_subscribers(prometheus::BuildGauge()
                             .Name("switchboard_broker_active_subscribers")
                             .Help("Open Subscribe streams (broadcast and group members).")
                             .Register(r)
                             .Add({})),
      storage_bytes(prometheus::BuildGauge()
                        .Name("switchboard_broker_storage_bytes")
                        .Help("Bytes used by the event store on disk.")
                        .Register(r)
                        .Add({})),
      stored_events(prometheus::BuildGauge()
                        .Name("switchboard_broker_stored_events")
                        .Help("Events currently retained.")
                        .Register(r)
                        .Add({})),
      last_sequence(prometheus::BuildGauge()
                        .Name("switchboard_broker_last_sequence")
                        .Help("The last sequence assigned.")
                        .Register(r)
                        .Add({})),
      group_pending(prometheus::BuildGauge()
                        .Name("switchboard_broker_group_pending")
                        .Help("Delivered and not yet acked events, per consumer group.")
                        .Register(r)),
      group_lag(prometheus::BuildGauge()
                    .Name("switchboard_broker_group_lag")
                    .Help("Events after the group's cursor, not yet delivered.")
                    .Register(r)),
      group_redeliveries(prometheus::BuildCounter()
                             .Name("switchboard_broker_group_redeliveries_total")
                             .Help("Deliveries with delivery_attempt > 1, per group.")
                             .Register(r)),
      group_dead_letters(prometheus::BuildCounter()
                             .Name("switchboard_broker_group_dead_letters_total")
                             .Help("Events dead-lettered after max_deliveries, per group.")
                             .Register(r)),
      events_delivered(prometheus::BuildCounter()
                           .Name("switchboard_broker_events_delivered_total")
                           .Help("Deliveries handed to subscribers, by mode (broadcast, group).")
                           .Register(r)),
      retention_deleted(prometheus::BuildCounter()
                            .Name("switchboard_broker_retention_deleted_events_total")
                            .Help("Events removed by retention (age or count).")
                            .Register(r)
                            .Add({})),
      subscribers_dropped(prometheus::BuildCounter()
                              .Name("switchboard_broker_subscribers_dropped_total")
                              .Help("Subscribers ended because they fell behind retention.")
                              .Register(r)
                              .Add({})),
      publishes_refused(prometheus::BuildCounter()
                            .Name("switchboard_broker_publishes_refused_total")
                            .Help("Publish calls refused because the publish queue was full "
                                  "(the store is not keeping up).")
                            .Register(r)
                            .Add({})),
      group_ops_dropped(prometheus::BuildCounter()
                            .Name("switchboard_broker_group_ops_dropped_total")
                            .Help("Group state changes the store refused repeatedly and that "
                                  "were dropped (a redelivery may follow).")
                            .Register(r)
                            .Add({})),
      queued_publish_bytes(prometheus::BuildGauge()
                               .Name("switchboard_broker_queued_publish_bytes")
                               .Help("Serialized bytes of publishes waiting for a commit.")
                               .Register(r)
                               .Add({})),
      tail_events(prometheus::BuildCounter()
                      .Name("switchboard_broker_tail_events_total")
                      .Help("Appends a replica on a shared store handed to its subscribers, by "
                            "source: local (its own commits) or store (read back: other "
                            "replicas').")
                      .Register(r)),
      tail_local(tail_events.Add({{"source", "local"}})),
      tail_read(tail_events.Add({{"source", "store"}})) {}

}  // namespace switchboard::broker
