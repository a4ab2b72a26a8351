#include "services/event_broker/delivery_codec.h"

namespace switchboard::broker {
namespace {

// Field numbers of broker.v1.Delivery, DeliveryBatch and events.v1.Event
// (see the protos).
constexpr uint8_t kDeliveryEventTag = (1 << 3) | 2;    // event, length-delimited
constexpr uint8_t kDeliveryAttemptTag = (2 << 3) | 0;  // delivery_attempt, varint
constexpr uint8_t kDeliveryAckIdTag = (3 << 3) | 2;    // ack_id, length-delimited
constexpr uint8_t kEventSequenceTag = (10 << 3) | 0;   // Event.sequence, varint
constexpr uint8_t kBatchDeliveriesTag = (1 << 3) | 2;  // DeliveryBatch.deliveries

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

size_t DeliverySize(size_t event_len, uint32_t attempt, size_t ack_id_len) {
  size_t n = 1 + VarintSize(event_len) + event_len;
  if (attempt != 0) n += 1 + VarintSize(attempt);
  if (ack_id_len != 0) n += 1 + VarintSize(ack_id_len) + ack_id_len;
  return n;
}

void AppendDelivery(const StoredEvent& event, size_t event_len, uint32_t attempt,
                    absl::string_view ack_id, std::string* out) {
  out->push_back(static_cast<char>(kDeliveryEventTag));
  PutVarint(event_len, out);
  out->append(event.payload);
  out->push_back(static_cast<char>(kEventSequenceTag));
  PutVarint(event.seq, out);
  if (attempt != 0) {
    out->push_back(static_cast<char>(kDeliveryAttemptTag));
    PutVarint(attempt, out);
  }
  if (!ack_id.empty()) {
    out->push_back(static_cast<char>(kDeliveryAckIdTag));
    PutVarint(ack_id.size(), out);
    out->append(ack_id.data(), ack_id.size());
  }
}

}  // namespace

void EncodeDelivery(const StoredEvent& event, uint32_t attempt, absl::string_view ack_id,
                    std::string* out) {
  size_t event_len = event.payload.size() + 1 + VarintSize(event.seq);
  out->clear();
  out->reserve(DeliverySize(event_len, attempt, ack_id.size()));
  AppendDelivery(event, event_len, attempt, ack_id, out);
}

size_t AppendBatchedDelivery(const StoredEvent& event, uint32_t attempt, absl::string_view ack_id,
                             std::string* out) {
  size_t before = out->size();
  size_t event_len = event.payload.size() + 1 + VarintSize(event.seq);
  size_t len = DeliverySize(event_len, attempt, ack_id.size());
  out->push_back(static_cast<char>(kBatchDeliveriesTag));
  PutVarint(len, out);
  AppendDelivery(event, event_len, attempt, ack_id, out);
  return out->size() - before;
}

}  // namespace switchboard::broker
