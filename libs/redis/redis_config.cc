#include "libs/redis/redis_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace switchboard::redis {
namespace {

// Percent-decoding, so passwords may hold ':', '@' and '/'.
bool PercentDecode(absl::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int v = 0;
    for (int k = 1; k <= 2; ++k) {
      char c = in[i + k];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        v |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        v |= c - 'A' + 10;
      } else {
        return false;
      }
    }
    out->push_back(static_cast<char>(v));
    i += 2;
  }
  return true;
}

absl::StatusOr<Endpoint> ParseHostPort(absl::string_view hp, absl::string_view flag) {
  Endpoint ep;
  absl::string_view port_part;
  if (absl::StartsWith(hp, "[")) {  // [::1]:6379
    size_t close = hp.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": '", hp, "' has an unclosed '['"));
    }
    ep.host = std::string(hp.substr(1, close - 1));
    absl::string_view rest = hp.substr(close + 1);
    if (!absl::ConsumePrefix(&rest, ":")) rest = "";
    port_part = rest;
  } else {
    size_t colon = hp.rfind(':');
    if (colon == absl::string_view::npos) {
      ep.host = std::string(hp);
    } else {
      ep.host = std::string(hp.substr(0, colon));
      port_part = hp.substr(colon + 1);
      if (port_part.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(flag, ": '", hp, "' has an empty port"));
      }
    }
  }
  if (ep.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", hp, "' has no host"));
  }
  if (!port_part.empty() &&
      (!absl::SimpleAtoi(port_part, &ep.port) || ep.port < 1 || ep.port > 65535)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": port '", port_part, "' is not a number between 1 and 65535"));
  }
  return ep;
}

}  // namespace

std::string Endpoint::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

std::string RedisConfig::Redacted() const {
  std::string auth;
  if (!user.empty() || !password.empty()) {
    auth = absl::StrCat(user, password.empty() ? "" : ":***", "@");
  }
  std::vector<std::string> hosts;
  for (const Endpoint& ep : seeds) hosts.push_back(ep.ToString());
  return absl::StrCat(cluster ? "redis-cluster://" : "redis://", auth, absl::StrJoin(hosts, ","),
                      db != 0 ? absl::StrCat("/", db) : "");
}

absl::StatusOr<RedisConfig> ParseRedisUrl(absl::string_view url, absl::string_view flag) {
  RedisConfig cfg;
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "redis-cluster://")) {
    cfg.cluster = true;
  } else if (!absl::ConsumePrefix(&rest, "redis://")) {
    if (absl::StartsWith(url, "rediss://")) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag,
                       ": rediss:// (TLS to Redis) is not supported by this build's "
                       "client (hiredis 0.14); use redis:// on a trusted network"));
    }
    size_t scheme_end = url.find("://");
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ",
                     scheme_end == absl::string_view::npos
                         ? "no scheme"
                         : absl::StrCat("unknown scheme '", url.substr(0, scheme_end), "://'"),
                     "; expected redis://host:port or redis-cluster://host:port[,host:port]"));
  }
  // userinfo ends at the last '@' so a raw '@' in a password still works.
  size_t at = rest.rfind('@');
  if (at != absl::string_view::npos) {
    absl::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = userinfo.find(':');
    std::string user, password;
    bool ok = colon == absl::string_view::npos
                  ? PercentDecode(userinfo, &password)  // redis://password@host
                  : PercentDecode(userinfo.substr(0, colon), &user) &&
                        PercentDecode(userinfo.substr(colon + 1), &password);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": bad percent-encoding in the URL's user or password"));
    }
    cfg.user = std::move(user);
    cfg.password = std::move(password);
  }
  size_t slash = rest.find('/');
  if (slash != absl::string_view::npos) {
    absl::string_view db = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (!db.empty()) {
      if (cfg.cluster) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": Redis Cluster has only database 0; drop '/", db, "'"));
      }
      if (!absl::SimpleAtoi(db, &cfg.db) || cfg.db < 0 || cfg.db > 1000) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": database '", db, "' is not a number"));
      }
    }
  }
  if (rest.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": no host in the Redis URL"));
  }
  std::vector<absl::string_view> hosts = absl::StrSplit(rest, ',');
  if (!cfg.cluster && hosts.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": several hosts need redis-cluster://; redis:// takes one"));
  }
  for (absl::string_view hp : hosts) {
    absl::StatusOr<Endpoint> ep = ParseHostPort(hp, flag);
    if (!ep.ok()) return ep.status();
    cfg.seeds.push_back(*std::move(ep));
  }
  return cfg;
}

bool IsRedisStoreUrl(absl::string_view store) {
  return absl::StartsWith(store, "redis://") || absl::StartsWith(store, "redis-cluster://") ||
         absl::StartsWith(store, "rediss://");
}

absl::StatusOr<RedisConfig> RedisConfigFromFlags(absl::string_view store,
                                                 const std::string& password_file) {
  if (!IsRedisStoreUrl(store)) {
    // Only the scheme: the rest may hold a password.
    size_t scheme_end = store.find("://");
    std::string shown =
        scheme_end == absl::string_view::npos
            ? (store.find_first_of(":@/") == absl::string_view::npos ? std::string(store) : "")
            : std::string(store.substr(0, scheme_end + 3));
    return absl::InvalidArgumentError(
        absl::StrCat("store: '", shown,
                     "' is not 'sqlite', redis://HOST:PORT or redis-cluster://HOST:PORT[,...]"));
  }
  absl::StatusOr<RedisConfig> cfg = ParseRedisUrl(store, "store");
  if (!cfg.ok()) return cfg.status();
  if (!password_file.empty()) {
    std::ifstream in(password_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis_password_file: cannot read '", password_file, "'"));
    }
    std::stringstream buf;
    buf << in.rdbuf();
    cfg->password = std::string(absl::StripTrailingAsciiWhitespace(buf.str()));
    if (cfg->password.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis_password_file: '", password_file, "' is empty"));
    }
  }
  return cfg;
}

absl::Status ValidateRedisPrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.size() > 64) {
    return absl::InvalidArgumentError("redis_prefix: must be 1 to 64 characters");
  }
  for (char c : prefix) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.' || c == ':')) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis_prefix: '", prefix, "' may hold only letters, digits and _ - . :"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisConfig> RedisStoreConfig(absl::string_view store,
                                             const std::string& password_file,
                                             const std::string& prefix, absl::Duration timeout) {
  absl::StatusOr<RedisConfig> cfg = RedisConfigFromFlags(store, password_file);
  if (!cfg.ok()) return cfg.status();
  if (absl::Status st = ValidateRedisPrefix(prefix); !st.ok()) return st;
  if (timeout < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError("redis_timeout: must be >= 10ms");
  }
  return cfg;
}

}  // namespace switchboard::redis
