#include "libs/common/event_rules.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/unknown_field_set.h"
#include "libs/common/struct_wire.h"

namespace switchboard {
namespace {

bool IsSegmentStart(char c) { return c >= 'a' && c <= 'z'; }
bool IsSegmentChar(char c) { return IsSegmentStart(c) || (c >= '0' && c <= '9') || c == '_'; }

// A dotted prefix of at least one segment: "order", "order.payment".
bool IsValidTypePrefix(absl::string_view p) {
  if (p.empty()) return false;
  bool at_start = true;
  for (char c : p) {
    if (at_start) {
      if (!IsSegmentStart(c)) return false;
      at_start = false;
    } else if (c == '.') {
      at_start = true;
    } else if (!IsSegmentChar(c)) {
      return false;
    }
  }
  return !at_start;
}

constexpr size_t kMaxTypeLength = 255;
constexpr size_t kMaxShortFieldLength = 1024;

}  // namespace

bool IsValidEventType(absl::string_view type) {
  return type.size() <= kMaxTypeLength && IsValidTypePrefix(type) &&
         type.find('.') != absl::string_view::npos;
}

namespace {

// The checks shared by Event and RawEvent: everything but `data`.
template <typename E>
absl::Status ValidateCommon(const E& event, size_t max_event_bytes, absl::string_view field) {
  if (event.type().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".type: required"));
  }
  if (!IsValidEventType(event.type())) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".type: '", event.type().substr(0, 64),
                     "' is not a lower-case dotted name like 'order.created' "
                     "(pattern ^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$)"));
  }
  size_t size = event.ByteSizeLong();
  if (size > max_event_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": event is ", size,
                                                   " bytes, over the limit of ", max_event_bytes,
                                                   " bytes (--max_event_bytes)"));
  }
  struct Named {
    const char* name;
    const std::string* value;
  };
  for (const Named& n :
       {Named{"id", &event.id()}, Named{"source", &event.source()},
        Named{"subject", &event.subject()}, Named{"correlation_id", &event.correlation_id()},
        Named{"user_id", &event.user_id()}}) {
    if (n.value->size() > kMaxShortFieldLength) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".", n.name, ": longer than ", kMaxShortFieldLength, " bytes"));
    }
  }
  if (event.has_time() && (event.time().nanos() < 0 || event.time().nanos() > 999999999 ||
                           event.time().seconds() < 0 || event.time().seconds() > 253402300799)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".time: out of range"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateEventForPublish(const events::v1::Event& event, size_t max_event_bytes,
                                     absl::string_view field) {
  return ValidateCommon(event, max_event_bytes, field);
}

namespace {

// How deep unknown groups nest in `set` (0: none). The parse that built
// `set` bounds the recursion.
int UnknownGroupDepth(const google::protobuf::UnknownFieldSet& set) {
  int deepest = 0;
  for (int i = 0; i < set.field_count(); ++i) {
    if (set.field(i).type() == google::protobuf::UnknownField::TYPE_GROUP) {
      deepest = std::max(deepest, 1 + UnknownGroupDepth(set.field(i).group()));
    }
  }
  return deepest;
}

// Unknown fields are kept (a newer client's fields reach newer subscribers),
// but protobuf parses unknown groups level by level: nested deep enough, they
// would pass the publish request and fail every DeliveryBatch carrying them.
constexpr int kMaxUnknownGroupDepth = 8;

}  // namespace

absl::Status ValidateEventForPublish(const broker::internal::RawEvent& event,
                                     size_t max_event_bytes, absl::string_view field,
                                     int data_depth) {
  if (absl::Status s = ValidateCommon(event, max_event_bytes, field); !s.ok()) return s;
  const google::protobuf::Reflection* r = event.GetReflection();
  int groups =
      std::max(UnknownGroupDepth(r->GetUnknownFields(event)),
               UnknownGroupDepth(event.time().GetReflection()->GetUnknownFields(event.time())));
  if (groups > kMaxUnknownGroupDepth) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": unknown fields nest groups ", groups,
                                                   " deep (at most ", kMaxUnknownGroupDepth, ")"));
  }
  // Each occurrence whole: pieces that each parse merge when parsed together.
  // The error's field name is built only for a piece that fails.
  for (const std::string& piece : event.data()) {
    if (!IsStructBytes(piece, data_depth)) {
      return CheckStructBytes(piece, data_depth, absl::StrCat(field, ".data"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TypeFilter> TypeFilter::Parse(const std::vector<std::string>& patterns,
                                             absl::string_view field) {
  TypeFilter f;
  f.match_all_ = patterns.empty();
  for (size_t i = 0; i < patterns.size(); ++i) {
    const std::string& p = patterns[i];
    if (p == "*") {
      f.match_all_ = true;
    } else if (absl::EndsWith(p, ".*") && IsValidTypePrefix(p.substr(0, p.size() - 2))) {
      f.prefixes_.push_back(p.substr(0, p.size() - 1));
    } else if (IsValidEventType(p)) {
      f.exact_.push_back(p);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "]: '", p.substr(0, 64),
                       "' is not a type filter (an exact type like 'order.created', a prefix "
                       "like 'order.*', or '*')"));
    }
    f.patterns_.push_back(p);
  }
  std::sort(f.exact_.begin(), f.exact_.end());
  return f;
}

bool TypeFilter::Matches(absl::string_view type) const {
  if (match_all_) return true;
  if (std::binary_search(exact_.begin(), exact_.end(), type)) return true;
  for (const std::string& p : prefixes_) {
    if (absl::StartsWith(type, p)) return true;
  }
  return false;
}

}  // namespace switchboard
