#include "libs/common/proto_json.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"

namespace switchboard {
namespace {

constexpr size_t kNpos = absl::string_view::npos;

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipSpace(absl::string_view s, size_t i) {
  while (i < s.size() && IsJsonSpace(s[i])) ++i;
  return i;
}

// s[i] is '"': the index after the closing quote, or kNpos.
size_t SkipString(absl::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;  // the escaped character, whatever it is
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return kNpos;
}

// The index after the JSON value that starts at s[i], or kNpos. Objects and
// arrays are skipped by counting brackets (outside strings), not by recursion.
size_t SkipValue(absl::string_view s, size_t i) {
  if (i >= s.size()) return kNpos;
  if (s[i] == '"') return SkipString(s, i);
  if (s[i] == '{' || s[i] == '[') {
    size_t depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = SkipString(s, i);
        if (i == kNpos) return kNpos;
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return kNpos;
  }
  // A bare token: number, true, false, null (or garbage).
  size_t start = i;
  while (i < s.size() && !IsJsonSpace(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
  return i > start ? i : kNpos;
}

size_t SkipDigits(absl::string_view t, size_t i) {
  while (i < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[i]))) ++i;
  return i;
}

// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  (RFC 8259 §6)
bool IsJsonNumber(absl::string_view t) {
  size_t i = 0;
  if (i < t.size() && t[i] == '-') ++i;
  if (i >= t.size() || !absl::ascii_isdigit(static_cast<unsigned char>(t[i]))) return false;
  i = (t[i] == '0') ? i + 1 : SkipDigits(t, i);
  if (i < t.size() && t[i] == '.') {
    size_t digits = i + 1;
    i = SkipDigits(t, digits);
    if (i == digits) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    size_t digits = i;
    i = SkipDigits(t, digits);
    if (i == digits) return false;
  }
  return i == t.size();
}

// A bare JSON token given for a duration field: whole milliseconds as a
// quoted Duration string ("5.000s"), or INVALID_ARGUMENT naming the field.
absl::StatusOr<std::string> MillisToDurationString(absl::string_view key, absl::string_view token) {
  double ms = 0;
  if (!IsJsonNumber(token) || !absl::SimpleAtod(token, &ms) || !(ms >= 0) ||
      ms > static_cast<double>(kMaxDurationMillis) || ms != std::floor(ms)) {
    constexpr size_t kShown = 40;
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": must be a whole number of milliseconds between 0 and ",
                     kMaxDurationMillis, ", or a duration string like \"5s\"; got ",
                     token.substr(0, kShown), token.size() > kShown ? "..." : ""));
  }
  int64_t n = static_cast<int64_t>(ms);
  return absl::StrCat("\"", n / 1000, ".", absl::Dec(n % 1000, absl::kZeroPad3), "s\"");
}

}  // namespace

std::string ProtoToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return absl::StrCat("{\"error\":\"", status.message().ToString(), "\"}");
  return out;
}

absl::Status JsonToProto(const std::string& json, google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("body: ", status.message().ToString()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MillisToDurationStrings(absl::string_view json,
                                                    const std::vector<std::string>& keys) {
  std::string out;
  size_t copied = 0;  // json[0, copied) is in `out`
  size_t i = SkipSpace(json, 0);
  if (!keys.empty() && i < json.size() && json[i] == '{') {
    i = SkipSpace(json, i + 1);
    // One member per turn: "key" : value ,
    while (i < json.size() && json[i] == '"') {
      size_t key_end = SkipString(json, i);
      if (key_end == kNpos) break;
      absl::string_view key = json.substr(i + 1, key_end - i - 2);
      i = SkipSpace(json, key_end);
      if (i >= json.size() || json[i] != ':') break;
      size_t value = SkipSpace(json, i + 1);
      size_t value_end = SkipValue(json, value);
      if (value_end == kNpos) break;
      absl::string_view token = json.substr(value, value_end - value);
      bool bare = token[0] != '"' && token[0] != '{' && token[0] != '[' && token != "null";
      bool wanted = false;
      for (const std::string& k : keys) wanted = wanted || absl::string_view(k) == key;
      if (bare && wanted) {
        absl::StatusOr<std::string> duration = MillisToDurationString(key, token);
        if (!duration.ok()) return duration.status();
        out.append(json.data() + copied, value - copied);
        out += *duration;
        copied = value_end;
      }
      i = SkipSpace(json, value_end);
      if (i >= json.size() || json[i] != ',') break;
      i = SkipSpace(json, i + 1);
    }
  }
  out.append(json.data() + copied, json.size() - copied);
  return out;
}

absl::Status JsonToProtoWithMillis(const std::string& json, google::protobuf::Message* message) {
  std::vector<std::string> keys;
  const google::protobuf::Descriptor* d = message->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    if (f->is_repeated() || f->message_type() == nullptr ||
        f->message_type()->full_name() != "google.protobuf.Duration") {
      continue;
    }
    keys.push_back(f->json_name());
    if (f->name() != f->json_name()) keys.push_back(f->name());
  }
  if (keys.empty()) return JsonToProto(json, message);
  absl::StatusOr<std::string> rewritten = MillisToDurationStrings(json, keys);
  if (!rewritten.ok()) return rewritten.status();
  return JsonToProto(*rewritten, message);
}

}  // namespace switchboard
