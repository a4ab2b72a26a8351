#ifndef SWITCHBOARD_LIBS_COMMON_EVENT_RULES_H_
#define SWITCHBOARD_LIBS_COMMON_EVENT_RULES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "switchboard/broker/internal/raw_event.pb.h"
#include "switchboard/events/v1/event.pb.h"

namespace switchboard {

// ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$ (SPEC §2).
bool IsValidEventType(absl::string_view type);

// Checks an event a client wants to publish. `field` prefixes error messages
// ("event", "events[3]") so that the client sees which one is wrong.
absl::Status ValidateEventForPublish(const events::v1::Event& event, size_t max_event_bytes,
                                     absl::string_view field);
// The same for the broker's wire twin of Event, plus `data`: it must be a
// valid google.protobuf.Struct `data_depth` messages deep in the deepest
// message that will carry the event.
absl::Status ValidateEventForPublish(const broker::internal::RawEvent& event,
                                     size_t max_event_bytes, absl::string_view field,
                                     int data_depth);

// A set of type filters: exact names, "prefix.*" and "*". Empty matches all.
class TypeFilter {
 public:
  TypeFilter() = default;
  // Errors name `field`, e.g. "types[1]: ...".
  static absl::StatusOr<TypeFilter> Parse(const std::vector<std::string>& patterns,
                                          absl::string_view field = "types");

  bool Matches(absl::string_view type) const;
  bool MatchesAll() const { return match_all_; }
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  bool match_all_ = true;
  std::vector<std::string> patterns_;
  std::vector<std::string> exact_;
  std::vector<std::string> prefixes_;  // with the trailing '.'
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_EVENT_RULES_H_
