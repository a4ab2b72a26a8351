#include "libs/common/auth.h"

#include <openssl/sha.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "libs/common/event_rules.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"
#include "libs/security/file_util.h"

namespace switchboard {
namespace {

bool ValidPattern(absl::string_view pattern) {
  return TypeFilter::Parse({std::string(pattern)}).ok() && !pattern.empty();
}

// Whether a scope pattern covers a requested filter: "*" covers all, "a.*"
// covers "a.b", "a.*" and "a.b.*", an exact name only itself.
bool Covers(absl::string_view scope, absl::string_view requested) {
  if (scope == "*") return true;
  if (absl::EndsWith(scope, ".*")) {
    absl::string_view prefix = scope.substr(0, scope.size() - 1);  // keeps the '.'
    return absl::StartsWith(requested, prefix);
  }
  return scope == requested;
}

bool Has(const Principal& p, Scope::Kind kind) {
  if (p.anonymous) return true;
  for (const Scope& s : p.scopes) {
    if (s.kind == Scope::kAdmin || s.kind == kind) return true;
    if (kind == Scope::kJobsRead && s.kind == Scope::kJobsAdmin) return true;
    if (kind == Scope::kWebhooksRead && s.kind == Scope::kWebhooksAdmin) return true;
  }
  return false;
}

absl::Status Deny(const Principal& p, absl::string_view scope) {
  return absl::PermissionDeniedError(
      absl::StrCat("principal '", p.name, "' lacks scope '", scope, "'"));
}

std::string StringField(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  if (it == s.fields().end() || !it->second.has_string_value()) return "";
  return it->second.string_value();
}

}  // namespace

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * SHA256_DIGEST_LENGTH);
  for (unsigned char c : digest) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

std::string ScopeName(Scope::Kind kind) {
  switch (kind) {
    case Scope::kAdmin:
      return "admin";
    case Scope::kJobsRead:
      return "jobs:read";
    case Scope::kJobsAdmin:
      return "jobs:admin";
    case Scope::kWebhooksRead:
      return "webhooks:read";
    case Scope::kWebhooksAdmin:
      return "webhooks:admin";
    case Scope::kPublish:
      return "publish";
    case Scope::kSubscribe:
      return "subscribe";
  }
  return "unknown";
}

absl::StatusOr<Scope> ParseScope(absl::string_view text) {
  Scope s;
  for (Scope::Kind k : {Scope::kAdmin, Scope::kJobsRead, Scope::kJobsAdmin, Scope::kWebhooksRead,
                        Scope::kWebhooksAdmin}) {
    if (text == ScopeName(k)) {
      s.kind = k;
      return s;
    }
  }
  if (absl::ConsumePrefix(&text, "publish:")) {
    s.kind = Scope::kPublish;
    s.pattern = std::string(text);
  } else if (absl::ConsumePrefix(&text, "subscribe:")) {
    s.kind = Scope::kSubscribe;
    std::pair<std::string, std::string> parts = absl::StrSplit(text, absl::MaxSplits('@', 1));
    s.pattern = parts.first;
    s.group = parts.second;
    if (absl::StrContains(text, '@') && s.group.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "': empty group after '@'"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown scope '", text,
        "' (admin, jobs:read, jobs:admin, webhooks:read, webhooks:admin, publish:<pattern>, "
        "subscribe:<pattern>[@group])"));
  }
  if (!ValidPattern(s.pattern)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", s.pattern, "' is not a type pattern (exact, prefix.* or *)"));
  }
  return s;
}

absl::Status RequireScope(const Principal& p, Scope::Kind kind) {
  return Has(p, kind) ? absl::OkStatus() : Deny(p, ScopeName(kind));
}

absl::Status RequirePublish(const Principal& p, absl::string_view type) {
  if (Has(p, Scope::kAdmin)) return absl::OkStatus();
  for (const Scope& s : p.scopes) {
    if (s.kind == Scope::kPublish && Covers(s.pattern, type)) return absl::OkStatus();
  }
  return Deny(p, absl::StrCat("publish:", type));
}

absl::Status RequireSubscribe(const Principal& p, const std::vector<std::string>& types,
                              absl::string_view group) {
  if (Has(p, Scope::kAdmin)) return absl::OkStatus();
  std::vector<std::string> wanted = types;
  if (wanted.empty()) wanted.push_back("*");
  for (const std::string& t : wanted) {
    bool covered = false;
    for (const Scope& s : p.scopes) {
      if (s.kind == Scope::kSubscribe && (s.group.empty() || s.group == group) &&
          Covers(s.pattern, t)) {
        covered = true;
        break;
      }
    }
    if (!covered) {
      return Deny(p, group.empty() ? absl::StrCat("subscribe:", t)
                                   : absl::StrCat("subscribe:", t, "@", group));
    }
  }
  return absl::OkStatus();
}

absl::Status RequireGroup(const Principal& p, absl::string_view group) {
  if (Has(p, Scope::kAdmin)) return absl::OkStatus();
  for (const Scope& s : p.scopes) {
    if (s.kind == Scope::kSubscribe && (s.group.empty() || s.group == group)) {
      return absl::OkStatus();
    }
  }
  return Deny(p, absl::StrCat("subscribe:*@", group));
}

bool MaySee(const Principal& p, absl::string_view type) {
  if (Has(p, Scope::kAdmin)) return true;
  for (const Scope& s : p.scopes) {
    if (s.kind == Scope::kSubscribe && Covers(s.pattern, type)) return true;
  }
  return false;
}

AuthMetrics::AuthMetrics(prometheus::Registry& registry, const std::string& service)
    : failures_(prometheus::BuildCounter()
                    .Name(absl::StrCat("switchboard_", service, "_auth_failures_total"))
                    .Help("Calls refused by authentication (unauthenticated) or authorisation "
                          "(permission_denied), by method")
                    .Register(registry)) {
  for (const char* reason : {"unauthenticated", "permission_denied"}) {
    failures_.Add({{"reason", reason}, {"method", "any"}});
  }
}

void AuthMetrics::Failure(absl::string_view reason, absl::string_view method) {
  failures_.Add({{"reason", std::string(reason)}, {"method", std::string(method)}}).Increment();
  failures_.Add({{"reason", std::string(reason)}, {"method", "any"}}).Increment();
}

Authenticator::Authenticator(AuthMetrics* metrics) : metrics_(metrics) {}

absl::StatusOr<std::shared_ptr<const Authenticator::Table>> Authenticator::Parse(
    const std::string& text) {
  auto table = std::make_shared<Table>();
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    auto fail = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth_tokens_file: line ", line_no, ": ", what));
    };
    google::protobuf::Struct entry;
    if (!google::protobuf::util::JsonStringToMessage(std::string(line), &entry).ok()) {
      return fail("not a JSON object");
    }
    Principal p;
    p.name = StringField(entry, "principal");
    if (p.name.empty()) return fail("principal: required");
    std::string hash = absl::AsciiStrToLower(StringField(entry, "token_sha256"));
    std::string identity = StringField(entry, "tls_identity");
    if (hash.empty() == identity.empty()) return fail("one of token_sha256 or tls_identity");
    if (!hash.empty() &&
        (hash.size() != 64 || hash.find_first_not_of("0123456789abcdef") != std::string::npos)) {
      return fail("token_sha256: 64 hex digits (sha256sum of the token)");
    }
    auto scopes = entry.fields().find("scopes");
    if (scopes == entry.fields().end() || !scopes->second.has_list_value()) {
      return fail("scopes: required, a list");
    }
    int i = 0;
    for (const auto& v : scopes->second.list_value().values()) {
      absl::StatusOr<Scope> s = ParseScope(v.string_value());
      if (!s.ok()) return fail(absl::StrCat("scopes[", i, "]: ", s.status().message()));
      p.scopes.push_back(*std::move(s));
      ++i;
    }
    auto& map = hash.empty() ? table->by_identity : table->by_token_hash;
    const std::string& key = hash.empty() ? identity : hash;
    if (!map.emplace(key, std::move(p)).second) {
      return fail(hash.empty() ? "tls_identity: listed twice" : "token_sha256: listed twice");
    }
  }
  return std::shared_ptr<const Table>(std::move(table));
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Open(const std::string& path,
                                                                   AuthMetrics* metrics,
                                                                   absl::Duration reload_interval) {
  absl::StatusOr<std::string> text = ReadFlagFile(path, "auth_tokens_file");
  if (!text.ok()) return text.status();
  absl::StatusOr<std::shared_ptr<const Table>> table = Parse(*text);
  if (!table.ok()) return table.status();
  auto a = std::make_unique<Authenticator>(metrics);
  a->path_ = path;
  a->reload_interval_ = reload_interval;
  {
    absl::MutexLock lock(&a->mu_);
    a->table_ = *std::move(table);
    a->text_ = *std::move(text);
  }
  a->reloader_ = std::thread([self = a.get()] { self->ReloadLoop(); });
  return a;
}

Authenticator::~Authenticator() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (reloader_.joinable()) reloader_.join();
}

void Authenticator::ReloadLoop() {
  SetThreadName("sb-auth-reload");
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), reload_interval_);
      if (stopping_) return;
    }
    ReloadOnce();
  }
}

void Authenticator::ReloadOnce() {
  // The file is read outside the lock: callers keep the table they have.
  absl::StatusOr<std::string> read = ReadFlagFile(path_, "auth_tokens_file");
  std::string text = read.ok() ? *std::move(read) : std::string();
  {
    absl::MutexLock lock(&mu_);
    if (!read.ok() || text == text_) return;
    text_ = text;  // a bad file is logged once per change, not once per interval
  }
  absl::StatusOr<std::shared_ptr<const Table>> table =
      absl::StripAsciiWhitespace(text).empty()
          ? absl::InvalidArgumentError("auth_tokens_file: empty (a write in progress?)")
          : Parse(text);
  if (!table.ok()) {
    LogError("auth tokens file not reloaded; the previous principals stay",
             {{"error", std::string(table.status().message())}});
    return;
  }
  LogInfo("auth tokens file reloaded",
          {{"tokens", static_cast<int64_t>((*table)->by_token_hash.size())},
           {"tls_identities", static_cast<int64_t>((*table)->by_identity.size())}});
  absl::MutexLock lock(&mu_);
  table_ = *std::move(table);
}

std::shared_ptr<const Authenticator::Table> Authenticator::Current() {
  absl::MutexLock lock(&mu_);
  return table_;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const Credentials& credentials,
                                                      absl::string_view method) {
  if (!enabled()) {
    return Principal::Anonymous();
  }
  std::shared_ptr<const Table> table = Current();
  auto refuse = [&](absl::string_view why) {
    if (metrics_ != nullptr) metrics_->Failure("unauthenticated", method);
    return absl::UnauthenticatedError(why);
  };
  absl::string_view header = absl::StripAsciiWhitespace(credentials.authorization);
  if (!header.empty()) {
    if (!absl::StartsWithIgnoreCase(header, "bearer ")) {
      return refuse("authorization: expected 'Bearer <token>'");
    }
    absl::string_view token = absl::StripAsciiWhitespace(header.substr(7));
    auto it = table->by_token_hash.find(Sha256Hex(token));
    if (it == table->by_token_hash.end()) return refuse("invalid bearer token");
    return it->second;
  }
  for (const std::string& id : credentials.tls_identities) {
    auto it = table->by_identity.find(id);
    if (it != table->by_identity.end()) return it->second;
  }
  return refuse("missing bearer token (authorization: Bearer <token>)");
}

absl::Status Authenticator::Denied(absl::Status status, absl::string_view method) {
  if (!status.ok() && metrics_ != nullptr) metrics_->Failure("permission_denied", method);
  return status;
}

}  // namespace switchboard
