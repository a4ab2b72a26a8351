#include "libs/common/json_log.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace switchboard {
namespace {

struct LogConfig {
  std::string service = "switchboard";
  LogLevel min_level = LogLevel::kInfo;
};

LogConfig& Config() {
  static LogConfig* config = new LogConfig();
  return *config;
}

absl::Mutex& OutputMutex() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
    case LogLevel::kStartup:
      return "info";
  }
  return "info";
}

}  // namespace

LogField::LogField(absl::string_view k, absl::string_view v) : key(k), json(JsonQuote(v)) {}
LogField::LogField(absl::string_view k, int64_t v) : key(k), json(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, uint64_t v) : key(k), json(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, double v) : key(k), json(absl::StrFormat("%.6g", v)) {}
LogField::LogField(absl::string_view k, bool v) : key(k), json(v ? "true" : "false") {}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  return out;
}

void InitLogging(absl::string_view service, absl::string_view min_level) {
  Config().service = std::string(service);
  if (min_level == "debug") Config().min_level = LogLevel::kDebug;
  if (min_level == "info") Config().min_level = LogLevel::kInfo;
  if (min_level == "warn") Config().min_level = LogLevel::kWarn;
  if (min_level == "error") Config().min_level = LogLevel::kError;
}

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  LogWithFields(level, msg, std::vector<LogField>(fields));
}

void LogWithFields(LogLevel level, absl::string_view msg, const std::vector<LogField>& fields) {
  if (level < Config().min_level) return;
  std::string line = absl::StrCat(
      "{\"ts\":\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      "\",\"level\":\"", LevelName(level), "\",\"service\":", JsonQuote(Config().service),
      ",\"msg\":", JsonQuote(msg));
  for (const LogField& f : fields) absl::StrAppend(&line, ",", JsonQuote(f.key), ":", f.json);
  line += "}\n";
  absl::MutexLock lock(&OutputMutex());
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace switchboard
