#ifndef SWITCHBOARD_LIBS_BROKER_CLIENT_BROKER_CLIENT_H_
#define SWITCHBOARD_LIBS_BROKER_CLIENT_BROKER_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/broker_client/event_wire.h"
#include "libs/security/tls.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard {

// A running group subscription; Stop() (or destruction) ends it.
class BrokerSubscription {
 public:
  virtual ~BrokerSubscription() = default;
  // Stops reading; returns once no callback runs any more.
  virtual void Stop() = 0;
  // True while a stream to the broker is open.
  virtual bool connected() const = 0;
};

// Called on the subscription's thread, one delivery at a time, in order.
using DeliveryCallback = std::function<void(const broker::v1::Delivery&)>;
// Called on the subscription's thread with the deliveries of one stream
// message (SubscribeBatched: as many as the broker had ready), in order.
using DeliveryBatchCallback = std::function<void(const broker::v1::DeliveryBatch&)>;

// What job-worker and webhook-delivery know of the broker: the only place
// that knows its RPCs. Every call retries UNAVAILABLE (broker restarting)
// within its timeout; publishes stay idempotent through the event id.
class BrokerClient {
 public:
  virtual ~BrokerClient() = default;

  // Sets an "evt_" id when the event has none, so that a retry after a lost
  // answer is recognised by the broker as the same event.
  virtual absl::StatusOr<broker::v1::PublishResponse> Publish(events::v1::Event event,
                                                              absl::Duration timeout) = 0;
  virtual absl::StatusOr<broker::v1::PublishBatchResponse> PublishBatch(
      std::vector<events::v1::Event> events, absl::Duration timeout) = 0;
  // PublishBatch for events already on the wire: sent as they are, with no
  // protobuf object built or freed (what the batch publisher uses). By
  // default they are decoded and given to PublishBatch.
  virtual absl::StatusOr<broker::v1::PublishBatchResponse> PublishEncoded(
      const EncodedEvents& events, absl::Duration timeout);

  virtual absl::Status Ack(const std::string& group, const std::vector<std::string>& ack_ids,
                           absl::Duration timeout) = 0;
  // `reason` says why (the broker keeps its first 1024 bytes, shown as the
  // dead letter's last_error when this was the last attempt).
  virtual absl::Status Nack(const std::string& group, const std::vector<std::string>& ack_ids,
                            absl::Duration delay, absl::string_view reason,
                            absl::Duration timeout) = 0;
  virtual absl::Status ExtendAckDeadline(const std::string& group,
                                         const std::vector<std::string>& ack_ids,
                                         absl::Duration deadline, absl::Duration timeout) = 0;

  // A consumer-group subscription that reconnects with backoff whenever the
  // stream ends (broker restart, network), resuming where the group is.
  virtual std::unique_ptr<BrokerSubscription> SubscribeGroup(broker::v1::SubscribeRequest request,
                                                             DeliveryCallback on_delivery) = 0;
  // The same, a stream message at a time, for consumers that handle many
  // deliveries together (one store read for all). The default hands
  // SubscribeGroup's deliveries over one per batch.
  virtual std::unique_ptr<BrokerSubscription> SubscribeGroupBatched(
      broker::v1::SubscribeRequest request, DeliveryBatchCallback on_batch) {
    return SubscribeGroup(std::move(request),
                          [on_batch = std::move(on_batch)](const broker::v1::Delivery& d) {
                            broker::v1::DeliveryBatch one;
                            *one.add_deliveries() = d;
                            on_batch(one);
                          });
  }
};

struct GrpcBrokerClientOptions {
  // HOST:PORT of the broker, or several replicas: dns:///NAME:PORT (every
  // address of the name) or ipv4:ADDR:PORT,ADDR:PORT, used round-robin.
  std::string target;
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  ClientTlsConfig tls;  // plain text unless tls.enabled
  // Sent as "authorization: Bearer <token>" on every call (--broker_token_file).
  std::string bearer_token;
};

std::unique_ptr<BrokerClient> NewGrpcBrokerClient(const GrpcBrokerClientOptions& options);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_BROKER_CLIENT_BROKER_CLIENT_H_
