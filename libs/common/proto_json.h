#ifndef SWITCHBOARD_LIBS_COMMON_PROTO_JSON_H_
#define SWITCHBOARD_LIBS_COMMON_PROTO_JSON_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "libs/common/admin_http.h"

namespace switchboard {

// The JSON API speaks protobuf's JSON mapping of the same messages as gRPC,
// so the two can never drift apart.
std::string ProtoToJson(const google::protobuf::Message& message);

// Unknown keys and bad values are errors (INVALID_ARGUMENT naming them).
absl::Status JsonToProto(const std::string& json, google::protobuf::Message* message);

// JsonToProto where a top-level google.protobuf.Duration field of `message`
// (spelled as its JSON name or its proto name) may also be a whole number of
// milliseconds, as in the original design's bodies
// ({"retryDelay":5000,"timeout":30000}); protobuf's duration strings ("5s",
// "0.250s") work as before. Any other bare value there (-1, 2.5, 1e300, NaN,
// true) is INVALID_ARGUMENT naming the field as the body spelled it.
absl::Status JsonToProtoWithMillis(const std::string& json, google::protobuf::Message* message);

// The rewrite behind JsonToProtoWithMillis: the numeric value of each of
// `keys` at the top level of the JSON object `json` becomes a Duration string
// (5000 -> "5.000s"); every other byte is copied as it is. One pass, no
// recursion, no tree; nested objects and arrays are skipped. Not a validator:
// where the JSON is malformed the scan stops and the rest is copied, for
// JsonToProto to report. Keys written with escapes are not recognised.
absl::StatusOr<std::string> MillisToDurationStrings(absl::string_view json,
                                                    const std::vector<std::string>& keys);

// The largest number of milliseconds taken: protobuf's Duration limit
// (315,576,000,000 s, about 10,000 years). Narrower limits are the service's.
inline constexpr int64_t kMaxDurationMillis = 315576000000000;

// 200 with the message as JSON, or the error response for the status.
template <typename T>
HttpResponse JsonAnswer(const absl::StatusOr<T>& result) {
  if (!result.ok()) return ErrorResponse(result.status());
  return HttpResponse{200, "application/json", ProtoToJson(*result)};
}

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_PROTO_JSON_H_
