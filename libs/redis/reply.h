#ifndef SWITCHBOARD_LIBS_REDIS_REPLY_H_
#define SWITCHBOARD_LIBS_REDIS_REPLY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchboard::redis {

// A reply, copied out of hiredis so that no header above libs/redis sees it.
struct Reply {
  enum class Type { kNil, kStatus, kError, kInteger, kString, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;  // kStatus, kError, kString
  std::vector<Reply> elements;

  bool is_error() const { return type == Type::kError; }
  bool is_nil() const { return type == Type::kNil; }
  // The first word of an error reply: "MOVED", "NOSCRIPT", "ERR", ...
  absl::string_view error_code() const {
    if (!is_error()) return {};
    absl::string_view s = str;
    return s.substr(0, s.find(' '));
  }
  static Reply Integer(int64_t v) {
    Reply r;
    r.type = Type::kInteger;
    r.integer = v;
    return r;
  }
  static Reply String(std::string v, Type t = Type::kString) {
    Reply r;
    r.type = t;
    r.str = std::move(v);
    return r;
  }
};

// OK for every reply but an error, which becomes a status naming `what`
// (the caller's operation) and Redis's message: UNAVAILABLE for trouble that
// passes (LOADING, BUSY, failover), RESOURCE_EXHAUSTED for OOM, else INTERNAL.
absl::Status ReplyStatus(const Reply& reply, absl::string_view what);

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_REPLY_H_
