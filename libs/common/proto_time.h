#ifndef SWITCHBOARD_LIBS_COMMON_PROTO_TIME_H_
#define SWITCHBOARD_LIBS_COMMON_PROTO_TIME_H_

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"

namespace switchboard {

// absl time <-> protobuf well-known types, at microsecond precision (what
// the stores keep). One copy for every service.
inline google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}
inline absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixMicros(google::protobuf::util::TimeUtil::TimestampToMicroseconds(t));
}
inline google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  return google::protobuf::util::TimeUtil::MicrosecondsToDuration(absl::ToInt64Microseconds(d));
}
inline absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Microseconds(google::protobuf::util::TimeUtil::DurationToMicroseconds(d));
}

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_PROTO_TIME_H_
