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

void WireEvent::Entry(absl::string_view key, const std::string& value) {
  std::string entry;
  LenField(&entry, kEntryKey, key);
  LenField(&entry, kEntryValue, value);
  LenField(&data_, kStructFields, entry);
}

WireEvent& WireEvent::Data(absl::string_view key, absl::string_view string_value) {
  std::string value;
  // A oneof member is written even when empty: it says which kind it is.
  LenField(&value, kValueString, string_value);
  Entry(key, value);
  return *this;
}

WireEvent& WireEvent::Data(absl::string_view key, double number_value) {
  std::string value;
  Tag(&value, kValueNumber, kFixed64);
  char bytes[8];
  std::memcpy(bytes, &number_value, 8);  // little-endian, as on the wire
  value.append(bytes, 8);
  Entry(key, value);
  return *this;
}

WireEvent& WireEvent::Data(absl::string_view key, bool bool_value) {
  std::string value;
  Tag(&value, kValueBool, kVarint);
  Varint(&value, bool_value ? 1 : 0);
  Entry(key, value);
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
