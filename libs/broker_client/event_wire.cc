#include "libs/broker_client/event_wire.h"

#include <cstring>

#include "libs/common/ids.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "doubles are copied to the wire as they are in memory");

namespace switchboard {
namespace {

// Protobuf's wire types.
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLen = 2;

void Varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Every field number here is below 16: its tag is one byte.
void Tag(std::string* out, int field, int wire_type) {
  Varint(out, (static_cast<uint64_t>(field) << 3) | wire_type);
}

void LenField(std::string* out, int field, absl::string_view bytes) {
  Tag(out, field, kLen);
  Varint(out, bytes.size());
  out->append(bytes.data(), bytes.size());
}

// google.protobuf.Struct { map<string, Value> fields = 1; } — a map entry is
// { string key = 1; Value value = 2; }; Value's kinds are number_value = 2,
// string_value = 3, bool_value = 4.
constexpr int kStructFields = 1;
constexpr int kEntryKey = 1;
constexpr int kEntryValue = 2;
constexpr int kValueNumber = 2;
constexpr int kValueString = 3;
constexpr int kValueBool = 4;
constexpr int kEventData = 8;

}  // namespace

void EncodedEvents::Add(events::v1::Event event) {
  if (event.id().empty()) event.set_id(NewId("evt"));
  AddSerialized(event.SerializeAsString());
}

void EncodedEvents::AddSerialized(absl::string_view event) {
  LenField(&wire_, 1, event);
  ++count_;
}

void EncodedEvents::Append(const EncodedEvents& other) {
  wire_.append(other.wire_);
  count_ += other.count_;
}

WireEvent& WireEvent::Str(int field, absl::string_view v) {
  // proto3: an empty string is the default and is not written.
  if (!v.empty()) LenField(&head_, field, v);
  return *this;
}

void WireEvent::Entry(absl::string_view key, absl::string_view value_head,
                      absl::string_view value_body) {
  // Written in place, lengths first: no buffer per entry.
  size_t value_len = value_head.size() + value_body.size();
  size_t entry_len =
      1 + VarintSize(key.size()) + key.size() + 1 + VarintSize(value_len) + value_len;
  Tag(&data_, kStructFields, kLen);
  Varint(&data_, entry_len);
  LenField(&data_, kEntryKey, key);
  Tag(&data_, kEntryValue, kLen);
  Varint(&data_, value_len);
  data_.append(value_head.data(), value_head.size());
  data_.append(value_body.data(), value_body.size());
}

WireEvent& WireEvent::Data(absl::string_view key, absl::string_view string_value) {
  // A oneof member is written even when empty: it says which kind it is.
  std::string head;
  Tag(&head, kValueString, kLen);
  Varint(&head, string_value.size());
  Entry(key, head, string_value);
  return *this;
}

WireEvent& WireEvent::Data(absl::string_view key, double number_value) {
  char value[9];
  value[0] = static_cast<char>((kValueNumber << 3) | kFixed64);
  std::memcpy(value + 1, &number_value, 8);  // little-endian, as on the wire
  Entry(key, absl::string_view(value, 9), {});
  return *this;
}

WireEvent& WireEvent::Data(absl::string_view key, bool bool_value) {
  const char value[2] = {static_cast<char>((kValueBool << 3) | kVarint), bool_value ? '\1' : '\0'};
  Entry(key, absl::string_view(value, 2), {});
  return *this;
}

std::string WireEvent::Finish() const {
  std::string out;
  out.reserve(head_.size() + data_.size() + 8);
  out.append(head_);
  // Written even when empty, as protobuf writes a set message field.
  LenField(&out, kEventData, data_);
  return out;
}

}  // namespace switchboard
