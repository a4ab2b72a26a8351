#ifndef SWITCHBOARD_LIBS_COMMON_WIRE_CHECK_H_
#define SWITCHBOARD_LIBS_COMMON_WIRE_CHECK_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace switchboard {

bool IsValidUtf8(absl::string_view s);

// `s` as valid UTF-8 (each byte that starts no valid character replaced by
// U+FFFD), cut to at most max_bytes without splitting a character: an error
// message of any bytes fits a protobuf string field.
std::string ValidUtf8Prefix(absl::string_view s, size_t max_bytes);

// NackRequest.reason: the broker refuses longer ones, clients cut theirs.
inline constexpr size_t kMaxNackReasonBytes = 1024;

// Walks serialized `bytes` of message type `type` and returns the path of the
// first string field holding invalid UTF-8, e.g.
// `event.data.fields["note"].string_value`, or nullopt.
std::optional<std::string> FindInvalidUtf8(const google::protobuf::Descriptor* type,
                                           absl::string_view bytes);

// Parses a request received as raw bytes. Protobuf refuses invalid UTF-8 in
// string fields without saying where; this names the field instead, so the
// client gets INVALID_ARGUMENT "<path>: invalid UTF-8". `public_name` names
// the request in errors when `message` is a private wire twin of it.
absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message,
                          absl::string_view public_name = "");

// Serializes a response into a raw ByteBuffer.
void SerializeResponse(const google::protobuf::Message& message, grpc::ByteBuffer* buffer);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_WIRE_CHECK_H_
