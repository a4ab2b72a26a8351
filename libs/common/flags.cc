#include "libs/common/flags.h"

#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/json_log.h"
#include "libs/common/shutdown.h"

ABSL_FLAG(bool, debug_mutex_deadlocks, false,
          "check every absl::Mutex acquisition for lock-order cycles (slow; for debugging)");

namespace switchboard {
namespace {

bool IsOwnFlagFile(absl::string_view filename) {
  return !absl::StrContains(filename, "absl/") && !absl::StrContains(filename, "/usr/");
}

}  // namespace

std::string EnvVarForFlag(absl::string_view name) {
  return absl::StrCat("SWITCHBOARD_", absl::AsciiStrToUpper(name));
}

absl::Status ApplyEnvToFlags(const std::map<std::string, std::string>& aliases) {
  auto apply = [](absl::CommandLineFlag* flag, const std::string& var) -> absl::Status {
    const char* value = std::getenv(var.c_str());
    if (value == nullptr) return absl::OkStatus();
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable ", var, "='", value, "': ", error));
    }
    return absl::OkStatus();
  };
  for (const auto& [var, name] : aliases) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    if (absl::Status s = apply(flag, var); !s.ok()) return s;
  }
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsOwnFlagFile(flag->Filename())) continue;
    if (absl::Status s = apply(flag, EnvVarForFlag(name)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage) {
  storage->clear();
  storage->reserve(argc);
  bool after_terminator = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") after_terminator = true;
    if (i > 0 && !after_terminator && absl::StartsWith(arg, "-")) {
      size_t start = arg.find_first_not_of('-');
      size_t end = arg.find('=');
      if (end == std::string::npos) end = arg.size();
      for (size_t j = start; j != std::string::npos && j < end; ++j) {
        if (arg[j] == '-') arg[j] = '_';
      }
    }
    storage->push_back(std::move(arg));
  }
  std::vector<char*> out;
  for (std::string& s : *storage) out.push_back(s.data());
  return out;
}

std::vector<char*> InitFlags(int argc, char** argv, absl::string_view usage,
                             const std::map<std::string, std::string>& aliases) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view f) { return IsOwnFlagFile(f); };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.normalize_filename = [](absl::string_view f) {
    for (absl::string_view root : {"services/", "libs/", "tests/", "bench/"}) {
      size_t at = f.find(root);
      if (at != absl::string_view::npos) return std::string(f.substr(at));
    }
    return std::string(f);
  };
  absl::SetFlagsUsageConfig(config);
  std::string text = absl::StrCat(
      usage,
      "\n\nEvery flag can also be set from the environment: --data_dir (or --data-dir) is "
      "SWITCHBOARD_DATA_DIR, and so on. The command line wins over the environment.");
  for (const auto& [var, name] : aliases) absl::StrAppend(&text, "\n  ", var, " sets --", name);
  absl::SetProgramUsageMessage(text);
  if (absl::Status s = ApplyEnvToFlags(aliases); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    std::exit(2);
  }
  static std::vector<std::string>* storage = new std::vector<std::string>();
  std::vector<char*> normalized = NormalizeFlagNames(argc, argv, storage);
  std::vector<char*> rest =
      absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  // Debian's Abseil checks lock order on every acquisition unless told not
  // to; unit tests keep that check, services turn it off for speed.
  if (!absl::GetFlag(FLAGS_debug_mutex_deadlocks)) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }
  return rest;
}

void InitService(int argc, char** argv, absl::string_view service, absl::string_view usage,
                 const std::map<std::string, std::string>& aliases) {
  BlockShutdownSignals();
  InitFlags(argc, argv, usage, aliases);
  std::string level = "info";
  if (absl::CommandLineFlag* flag = absl::FindCommandLineFlag("log_level")) {
    level = flag->CurrentValue();
  }
  InitLogging(service, level);
}

}  // namespace switchboard
