#ifndef SWITCHBOARD_LIBS_BROKER_CLIENT_NULL_BROKER_CLIENT_H_
#define SWITCHBOARD_LIBS_BROKER_CLIENT_NULL_BROKER_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "libs/broker_client/broker_client.h"

namespace switchboard {

// A BrokerClient where every call succeeds and does nothing: the base of the
// fakes in unit tests, which override only the calls they observe.
class NullBrokerClient : public BrokerClient {
 public:
  absl::StatusOr<broker::v1::PublishResponse> Publish(events::v1::Event, absl::Duration) override {
    return broker::v1::PublishResponse();
  }
  absl::StatusOr<broker::v1::PublishBatchResponse> PublishBatch(std::vector<events::v1::Event>,
                                                                absl::Duration) override {
    return broker::v1::PublishBatchResponse();
  }
  absl::Status Ack(const std::string&, const std::vector<std::string>&, absl::Duration) override {
    return absl::OkStatus();
  }
  absl::Status Nack(const std::string&, const std::vector<std::string>&, absl::Duration,
                    absl::string_view, absl::Duration) override {
    return absl::OkStatus();
  }
  absl::Status ExtendAckDeadline(const std::string&, const std::vector<std::string>&,
                                 absl::Duration, absl::Duration) override {
    return absl::OkStatus();
  }
  std::unique_ptr<BrokerSubscription> SubscribeGroup(broker::v1::SubscribeRequest,
                                                     DeliveryCallback) override {
    return nullptr;
  }
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_BROKER_CLIENT_NULL_BROKER_CLIENT_H_
