#ifndef SWITCHBOARD_LIBS_COMMON_PROTO_JSON_H_
#define SWITCHBOARD_LIBS_COMMON_PROTO_JSON_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "libs/common/admin_http.h"

namespace switchboard {

// The JSON API speaks protobuf's JSON mapping of the same messages as gRPC,
// so the two can never drift apart.
std::string ProtoToJson(const google::protobuf::Message& message);

// Unknown keys and bad values are errors (INVALID_ARGUMENT naming them).
absl::Status JsonToProto(const std::string& json, google::protobuf::Message* message);

// 200 with the message as JSON, or the error response for the status.
template <typename T>
HttpResponse JsonAnswer(const absl::StatusOr<T>& result) {
  if (!result.ok()) return ErrorResponse(result.status());
  return HttpResponse{200, "application/json", ProtoToJson(*result)};
}

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_PROTO_JSON_H_
