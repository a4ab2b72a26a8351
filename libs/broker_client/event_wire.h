#ifndef SWITCHBOARD_LIBS_BROKER_CLIENT_EVENT_WIRE_H_
#define SWITCHBOARD_LIBS_BROKER_CLIENT_EVENT_WIRE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "switchboard/events/v1/event.pb.h"

namespace switchboard {

// Events already in their wire form: the bytes of PublishBatchRequest's
// `repeated Event events = 1`, ready to be sent as they are. Appending two
// of them is appending their bytes, so a batch of many submissions is built
// without a protobuf object.
class EncodedEvents {
 public:
  // An event with no id gets one (NewId("evt")) first, so that a retry is
  // recognised by the broker's dedupe window.
  void Add(events::v1::Event event);
  // One Event's serialized bytes (it must have an id).
  void AddSerialized(absl::string_view event);
  void Append(const EncodedEvents& other);

  size_t count() const { return count_; }
  bool empty() const { return count_ == 0; }
  const std::string& wire() const { return wire_; }

 private:
  std::string wire_;
  size_t count_ = 0;
};

// Writes one Event field by field, with its `data` Struct, straight to
// bytes: what a job's lifecycle events cost is a few appends, not a map of
// Values built, serialized and freed. Parsing the result gives the Event
// the setters name (event_wire_test checks it against protobuf's own).
class WireEvent {
 public:
  WireEvent& id(absl::string_view v) { return Str(1, v); }
  WireEvent& type(absl::string_view v) { return Str(2, v); }
  WireEvent& source(absl::string_view v) { return Str(3, v); }
  WireEvent& subject(absl::string_view v) { return Str(4, v); }
  WireEvent& correlation_id(absl::string_view v) { return Str(6, v); }
  WireEvent& user_id(absl::string_view v) { return Str(7, v); }
  // data[key]: each key once (a repeated key leaves the last one, as a
  // parser keeps the last map entry).
  WireEvent& Data(absl::string_view key, absl::string_view string_value);
  WireEvent& Data(absl::string_view key, const char* string_value) {
    return Data(key, absl::string_view(string_value));
  }
  WireEvent& Data(absl::string_view key, double number_value);
  WireEvent& Data(absl::string_view key, bool bool_value);

  // The Event's serialized bytes.
  std::string Finish() const;

 private:
  WireEvent& Str(int field, absl::string_view v);
  // One data[key] map entry; the Value's bytes are value_head + value_body.
  void Entry(absl::string_view key, absl::string_view value_head, absl::string_view value_body);

  std::string head_;
  std::string data_;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_BROKER_CLIENT_EVENT_WIRE_H_
