#ifndef SWITCHBOARD_LIBS_COMMON_FLAGS_H_
#define SWITCHBOARD_LIBS_COMMON_FLAGS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchboard {

// The environment variable that sets flag `name`: SWITCHBOARD_ + upper case,
// e.g. data_dir -> SWITCHBOARD_DATA_DIR.
std::string EnvVarForFlag(absl::string_view name);

// Applies environment variables to the program's own flags (not absl's):
// SWITCHBOARD_<FLAG>, plus `aliases` (env var -> flag name) for names the
// spec fixes, such as WEBHOOK_MAX_RETRIES. Command-line values win because
// they are parsed afterwards. Errors name the variable.
absl::Status ApplyEnvToFlags(const std::map<std::string, std::string>& aliases = {});

// Rewrites "--foo-bar" to "--foo_bar" so both spellings work.
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage);

// The whole start-up sequence for a binary: usage text, env, argv; exits with
// a message on a bad value. Returns positional arguments.
std::vector<char*> InitFlags(int argc, char** argv, absl::string_view usage,
                             const std::map<std::string, std::string>& aliases = {});

// What every main() does first: block SIGTERM/SIGINT for the signal waiter,
// read flags (InitFlags), start JSON logging for `service` at the level of
// the binary's --log_level flag.
void InitService(int argc, char** argv, absl::string_view service, absl::string_view usage,
                 const std::map<std::string, std::string>& aliases = {});

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_FLAGS_H_
