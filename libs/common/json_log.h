#ifndef SWITCHBOARD_LIBS_COMMON_JSON_LOG_H_
#define SWITCHBOARD_LIBS_COMMON_JSON_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchboard {

// One JSON object per line on stderr:
// {"ts":"2026-11-26T10:00:00.123Z","level":"info","service":"event-broker","msg":"...",...}
// kStartup is printed as "info" whatever --log_level says: the start-up lines
// ("listening grpc=... http=...") are what scripts and tests wait for.
enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kStartup = 4 };

// A key and its value already rendered as JSON.
struct LogField {
  LogField(absl::string_view k, absl::string_view v);
  LogField(absl::string_view k, const char* v) : LogField(k, absl::string_view(v)) {}
  LogField(absl::string_view k, const std::string& v) : LogField(k, absl::string_view(v)) {}
  LogField(absl::string_view k, int64_t v);
  LogField(absl::string_view k, uint64_t v);
  LogField(absl::string_view k, int v) : LogField(k, static_cast<int64_t>(v)) {}
  LogField(absl::string_view k, unsigned v) : LogField(k, static_cast<uint64_t>(v)) {}
  LogField(absl::string_view k, double v);
  LogField(absl::string_view k, bool v);
  std::string key;
  std::string json;
};

void InitLogging(absl::string_view service, absl::string_view min_level);
void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});
void LogWithFields(LogLevel level, absl::string_view msg, const std::vector<LogField>& fields);
inline void LogInfo(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarn(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarn, msg, fields);
}
inline void LogError(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, msg, fields);
}

// JSON string literal for s, quotes included.
std::string JsonQuote(absl::string_view s);

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_JSON_LOG_H_
