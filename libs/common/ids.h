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

// A deterministic id of fixed length, whatever the length of its parts:
// prefix + "_" + 26 Crockford base32 characters of SHA-256 over the parts.
// The same parts always give the same id (a redelivered event maps to the
// same job and the same derived events), and a chain of derivations does
// not grow (DeriveId("evt", {DeriveId("job", {…}), "completed"})).
std::string DeriveId(absl::string_view prefix, std::initializer_list<absl::string_view> parts);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_IDS_H_
