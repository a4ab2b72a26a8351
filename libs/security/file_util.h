#ifndef SWITCHBOARD_LIBS_SECURITY_FILE_UTIL_H_
#define SWITCHBOARD_LIBS_SECURITY_FILE_UTIL_H_

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace switchboard {

// The whole file a flag names (certificates, keys, token and key files:
// small, read at start and on reload); INVALID_ARGUMENT
// "<flag>: cannot read '<path>'" when it cannot be opened.
inline absl::StatusOr<std::string> ReadFlagFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_SECURITY_FILE_UTIL_H_
