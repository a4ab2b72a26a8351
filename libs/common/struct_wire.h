#ifndef SWITCHBOARD_LIBS_COMMON_STRUCT_WIRE_H_
#define SWITCHBOARD_LIBS_COMMON_STRUCT_WIRE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchboard {

// Protobuf's default recursion limit: how many messages deep a parse may go.
inline constexpr int kProtobufRecursionLimit = 100;

// Whether `bytes` would parse as a google.protobuf.Struct nested `depth`
// messages deep in a message being parsed, without building one: the same
// verdict as protobuf's parser (well-formed wire data, valid UTF-8 in every
// string and key, at most kProtobufRecursionLimit messages deep in all;
// unknown fields are allowed). Linear in the size of `bytes`.
bool IsStructBytes(absl::string_view bytes, int depth = 0);

// IsStructBytes as a status: INVALID_ARGUMENT naming `field`, with the path
// of the first invalid string when that is the reason
// (`event.data.fields["note"].string_value: invalid UTF-8`).
absl::Status CheckStructBytes(absl::string_view bytes, int depth = 0,
                              absl::string_view field = "data");

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_STRUCT_WIRE_H_
