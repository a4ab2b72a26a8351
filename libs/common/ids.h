#ifndef SWITCHBOARD_LIBS_COMMON_IDS_H_
#define SWITCHBOARD_LIBS_COMMON_IDS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace switchboard {

// A ULID (26 Crockford base32 chars: 48-bit ms time + 80 random bits).
// Monotonic within a process: ids made in the same millisecond still sort in
// the order they were made.
std::string NewUlid(absl::Time now = absl::Now());

// prefix + "_" + ULID, e.g. NewId("evt") == "evt_01J...".
std::string NewId(absl::string_view prefix);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_IDS_H_
