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

// A deterministic id derived from one id, in the order of the ids it is
// derived from: when `source` ends in a ULID (as NewId's ids do) the result
// is prefix + "_" + that ULID's 10 characters of time + the first 16
// characters of DeriveId(prefix, {source}); otherwise it is
// DeriveId(prefix, {source}). Ids derived from ids made over time then sort
// by that time, so a B-tree keyed by them grows at its end: purely hashed
// keys made every insert land on a random page, which a commit then wrote
// out whole (SQLite's job store slowed by half as it grew to 200 000 jobs).
std::string DeriveOrderedId(absl::string_view prefix, absl::string_view source);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_IDS_H_
