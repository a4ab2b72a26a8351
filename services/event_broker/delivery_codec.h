#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_DELIVERY_CODEC_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_DELIVERY_CODEC_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "services/event_broker/event_store.h"

namespace switchboard::broker {

// Writes the wire form of broker.v1.Delivery{event, delivery_attempt, ack_id}
// straight from a stored event's bytes: the event's payload plus its sequence
// field, with no protobuf object built per delivery.
void EncodeDelivery(const StoredEvent& event, uint32_t attempt, absl::string_view ack_id,
                    std::string* out);

// Appends one delivery to the wire form of a broker.v1.DeliveryBatch being
// built in `out` (its `deliveries` are the message's only field, so a batch
// is the concatenation of these). Returns the bytes appended.
size_t AppendBatchedDelivery(const StoredEvent& event, uint32_t attempt, absl::string_view ack_id,
                             std::string* out);

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_DELIVERY_CODEC_H_
