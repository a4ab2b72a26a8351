#include "services/webhook_delivery/registry.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/ids.h"
#include "libs/common/proto_time.h"
#include "services/webhook_delivery/signing.h"

namespace switchboard::webhooks {
namespace {

google::protobuf::Timestamp ToProto(absl::Time t) { return ToProtoTime(t); }
google::protobuf::Duration ToProto(absl::Duration d) { return ToProtoDuration(d); }
absl::Duration FromProto(const google::protobuf::Duration& d) { return FromProtoDuration(d); }

constexpr uint32_t kMaxRetryAttempts = 20;

absl::Status CheckRetryAttempts(uint32_t n) {
  if (n > kMaxRetryAttempts) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry_attempts: ", n, " is more than ", kMaxRetryAttempts));
  }
  return absl::OkStatus();
}

absl::Status CheckDuration(const google::protobuf::Duration& d, absl::string_view field,
                           absl::Duration min, absl::Duration max) {
  if (d.seconds() < -315576000000 || d.seconds() > 315576000000 || d.nanos() <= -1000000000 ||
      d.nanos() >= 1000000000) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not a valid duration"));
  }
  absl::Duration v = FromProto(d);
  if (v < min || v > max) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", absl::FormatDuration(v),
                                                   " is outside [", absl::FormatDuration(min), ", ",
                                                   absl::FormatDuration(max), "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TypeFilter> CheckEvents(
    const google::protobuf::RepeatedPtrField<std::string>& events) {
  if (events.empty()) {
    return absl::InvalidArgumentError(
        "events: at least one event filter (an event type, 'prefix.*' or '*')");
  }
  return TypeFilter::Parse(std::vector<std::string>(events.begin(), events.end()), "events");
}

// retry_attempts, retry_delay, timeout and description, for both Register
// and Update (their messages share the field names).
template <typename Request>
absl::Status CheckOptionalFields(const Request& req) {
  if (req.has_retry_attempts()) {
    if (absl::Status s = CheckRetryAttempts(req.retry_attempts()); !s.ok()) return s;
  }
  if (req.has_retry_delay()) {
    if (absl::Status s = CheckDuration(req.retry_delay(), "retry_delay", absl::Milliseconds(100),
                                       absl::Hours(24));
        !s.ok()) {
      return s;
    }
  }
  if (req.has_timeout()) {
    if (absl::Status s =
            CheckDuration(req.timeout(), "timeout", absl::Milliseconds(100), absl::Minutes(5));
        !s.ok()) {
      return s;
    }
  }
  if (req.description().size() > 1000) {
    return absl::InvalidArgumentError("description: longer than 1000 characters");
  }
  return absl::OkStatus();
}

// `allow_none`: per_second 0 (an update removing the limit).
absl::Status CheckRateLimit(const v1::RateLimit& rl, bool allow_none) {
  double rate = rl.per_second();
  if (!(allow_none && rate == 0) && !(rate >= 0.01 && rate <= 100000)) {
    return absl::InvalidArgumentError(absl::StrCat("rate_limit.per_second: ", rate,
                                                   " is outside [0.01, 100000]",
                                                   allow_none ? " (0 removes the limit)" : ""));
  }
  if (rl.burst() > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate_limit.burst: ", rl.burst(), " is more than 100000"));
  }
  return absl::OkStatus();
}

absl::Status NoWebhook(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("id: no webhook '", id, "'"));
}

}  // namespace

WebhookRegistry::WebhookRegistry(RegistryConfig config, WebhookStore* store, Clock* clock)
    : config_(std::move(config)), store_(store), clock_(clock) {}

absl::Status WebhookRegistry::Load() { return Refresh().status(); }

absl::StatusOr<bool> WebhookRegistry::Refresh() {
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<uint64_t> generation = store_->Generation();
  if (!generation.ok()) return generation.status();
  // Listed again when the generation moved, and now and then regardless (a
  // Redis that lost its data starts counting again).
  absl::Time now = clock_->Now();
  if (loaded_ && *generation == generation_ && now - listed_at_ < absl::Seconds(30)) return false;
  // Read after the generation: a change made meanwhile moves it again and
  // the next refresh reads once more.
  absl::StatusOr<std::vector<WebhookRecord>> all = store_->List();
  if (!all.ok()) return all.status();
  std::map<std::string, WebhookRecord> fresh;
  for (WebhookRecord& r : *all) fresh[r.webhook.id()] = std::move(r);
  generation_ = *generation;
  listed_at_ = now;
  loaded_ = true;
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    changed = fresh.size() != records_.size();
    for (auto a = fresh.begin(), b = records_.begin(); !changed && a != fresh.end(); ++a, ++b) {
      changed = a->first != b->first || a->second.version != b->second.version;
    }
    records_ = std::move(fresh);
  }
  listed_generation_.store(*generation, std::memory_order_release);
  return changed;
}

absl::StatusOr<WebhookRecord> WebhookRegistry::MutateLocked(
    const std::string& id, const std::function<absl::Status(WebhookRecord&)>& change) {
  constexpr int kTries = 5;
  for (int attempt = 1;; ++attempt) {
    // Read from the store, not the cache: on a shared store another replica
    // may have changed it since (on the embedded one it is the same record).
    absl::StatusOr<std::optional<WebhookRecord>> stored = store_->Get(id);
    if (!stored.ok()) return stored.status();
    if (!stored->has_value()) {
      absl::MutexLock lock(&mu_);
      records_.erase(id);
      return NoWebhook(id);
    }
    WebhookRecord r = **std::move(stored);
    if (absl::Status s = change(r); !s.ok()) return s;
    absl::StatusOr<uint64_t> version = store_->Put(r);
    if (!version.ok()) {
      if (absl::IsAborted(version.status()) && attempt < kTries) continue;
      return version.status();
    }
    r.version = *version;
    absl::MutexLock lock(&mu_);
    records_[id] = r;
    return r;
  }
}

absl::Status WebhookRegistry::ValidateTarget(const std::string& url) const {
  absl::StatusOr<WebhookUrl> parsed = ParseWebhookUrl(url);
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<VettedTarget> vetted = VetTarget(*parsed, config_.targets, config_.resolve);
  if (!vetted.ok()) {
    if (vetted.status().code() == absl::StatusCode::kInvalidArgument) return vetted.status();
    // An unresolvable name may resolve later; each delivery checks again.
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

v1::Webhook WebhookRegistry::Public(const WebhookRecord& r) {
  v1::Webhook w = r.webhook;
  w.clear_secret();
  return w;
}

absl::StatusOr<v1::Webhook> WebhookRegistry::Register(const v1::RegisterWebhookRequest& req) {
  if (absl::Status s = ValidateTarget(req.url()); !s.ok()) return s;
  if (absl::StatusOr<TypeFilter> f = CheckEvents(req.events()); !f.ok()) return f.status();
  std::string secret = req.secret();
  if (secret.empty()) {
    absl::StatusOr<std::string> generated = GenerateSecret();
    if (!generated.ok()) return generated.status();
    secret = *generated;
  } else if (absl::StatusOr<std::string> key = DecodeSecret(secret); !key.ok()) {
    return key.status();
  }
  if (absl::Status s = CheckOptionalFields(req); !s.ok()) return s;
  if (req.has_rate_limit()) {
    if (absl::Status s = CheckRateLimit(req.rate_limit(), false); !s.ok()) return s;
  }
  WebhookRecord r;
  v1::Webhook& w = r.webhook;
  absl::Time now = clock_->Now();
  w.set_id(NewId("wh"));
  w.set_url(req.url());
  *w.mutable_events() = req.events();
  w.set_secret(secret);
  w.set_retry_attempts(req.has_retry_attempts() ? req.retry_attempts()
                                                : config_.default_retry_attempts);
  *w.mutable_retry_delay() =
      req.has_retry_delay() ? req.retry_delay() : ToProto(config_.default_retry_delay);
  *w.mutable_timeout() = req.has_timeout() ? req.timeout() : ToProto(config_.default_timeout);
  w.set_description(req.description());
  if (req.has_rate_limit()) *w.mutable_rate_limit() = req.rate_limit();
  w.set_active(true);
  *w.mutable_created_at() = ToProto(now);
  *w.mutable_updated_at() = ToProto(now);
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<uint64_t> version = store_->Put(r);
  if (!version.ok()) return version.status();
  r.version = *version;
  absl::MutexLock lock(&mu_);
  records_[w.id()] = r;
  return w;  // the only answer that carries the secret, with RotateSecret's
}

absl::StatusOr<v1::Webhook> WebhookRegistry::Update(const v1::UpdateWebhookRequest& req) {
  if (req.id().empty()) return absl::InvalidArgumentError("id: required");
  if (req.has_url()) {
    if (absl::Status s = ValidateTarget(req.url()); !s.ok()) return s;
  }
  if (!req.events().empty()) {
    if (absl::StatusOr<TypeFilter> f = CheckEvents(req.events()); !f.ok()) return f.status();
  }
  if (absl::Status s = CheckOptionalFields(req); !s.ok()) return s;
  if (req.has_rate_limit()) {
    if (absl::Status s = CheckRateLimit(req.rate_limit(), true); !s.ok()) return s;
  }
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<WebhookRecord> r = MutateLocked(req.id(), [&](WebhookRecord& r) {
    v1::Webhook& w = r.webhook;
    if (req.has_url()) w.set_url(req.url());
    if (!req.events().empty()) *w.mutable_events() = req.events();
    if (req.has_retry_attempts()) w.set_retry_attempts(req.retry_attempts());
    if (req.has_retry_delay()) *w.mutable_retry_delay() = req.retry_delay();
    if (req.has_timeout()) *w.mutable_timeout() = req.timeout();
    if (req.has_description()) w.set_description(req.description());
    if (req.has_rate_limit()) {
      if (req.rate_limit().per_second() == 0) {
        w.clear_rate_limit();
      } else {
        *w.mutable_rate_limit() = req.rate_limit();
      }
    }
    if (req.has_active()) {
      w.set_active(req.active());
      if (req.active()) w.clear_disabled_reason();
    }
    *w.mutable_updated_at() = ToProto(clock_->Now());
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  return Public(*r);
}

// Every change is persisted first and applied in memory only once the store
// took it (Register, Update, RotateSecret, Disable and Unregister alike), under
// write_mu_ so that two changes of one webhook reach the store in the order
// they reach memory: a failed write leaves both as they were, and a restart
// never brings back (or loses) what the service had answered. Readers (the
// engine, intake) take only mu_, never held across a store call.
absl::Status WebhookRegistry::Unregister(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id: required");
  absl::MutexLock write(&write_mu_);
  bool known;
  {
    absl::MutexLock lock(&mu_);
    known = records_.count(id) > 0;
  }
  // A shared store may hold a webhook registered elsewhere a moment ago.
  if (!known && !store_->shared()) return NoWebhook(id);
  absl::StatusOr<bool> deleted = store_->Delete(id);
  if (!deleted.ok()) return deleted.status();
  {
    absl::MutexLock lock(&mu_);
    records_.erase(id);
  }
  if (!*deleted) return NoWebhook(id);
  return absl::OkStatus();
}

absl::StatusOr<v1::Webhook> WebhookRegistry::Get(const std::string& id) const {
  if (id.empty()) return absl::InvalidArgumentError("id: required");
  absl::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return NoWebhook(id);
  return Public(it->second);
}

absl::StatusOr<v1::Webhook> WebhookRegistry::GetFresh(const std::string& id) {
  absl::StatusOr<v1::Webhook> known = Get(id);
  if (!absl::IsNotFound(known.status()) || !store_->shared()) return known;
  // Under write_mu_: no refresh or write of this replica in between, and one
  // that removes it later moves the generation.
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<std::optional<WebhookRecord>> stored = store_->Get(id);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return known;
  absl::MutexLock lock(&mu_);
  WebhookRecord& r = records_[id];
  if ((*stored)->version > r.version) r = **std::move(stored);
  return Public(r);
}

std::vector<v1::Webhook> WebhookRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Webhook> out;
  for (const auto& [id, r] : records_) out.push_back(Public(r));
  return out;
}

absl::StatusOr<v1::Webhook> WebhookRegistry::RotateSecret(const v1::RotateSecretRequest& req) {
  if (req.id().empty()) return absl::InvalidArgumentError("id: required");
  std::string secret = req.secret();
  if (secret.empty()) {
    absl::StatusOr<std::string> generated = GenerateSecret();
    if (!generated.ok()) return generated.status();
    secret = *generated;
  } else if (absl::StatusOr<std::string> key = DecodeSecret(secret); !key.ok()) {
    return key.status();
  }
  absl::MutexLock write(&write_mu_);
  absl::StatusOr<WebhookRecord> r = MutateLocked(req.id(), [&](WebhookRecord& r) {
    absl::Time now = clock_->Now();
    r.previous_secret = r.webhook.secret();
    r.previous_expires = now + config_.rotation_overlap;
    r.webhook.set_secret(secret);
    *r.webhook.mutable_previous_secret_expires_at() = ToProto(r.previous_expires);
    *r.webhook.mutable_updated_at() = ToProto(now);
    return absl::OkStatus();
  });
  if (!r.ok()) return r.status();
  return r->webhook;
}

absl::Status WebhookRegistry::Disable(const std::string& id, const std::string& reason) {
  absl::MutexLock write(&write_mu_);
  return MutateLocked(id,
                      [&](WebhookRecord& r) {
                        r.webhook.set_active(false);
                        r.webhook.set_disabled_reason(reason);
                        *r.webhook.mutable_updated_at() = ToProto(clock_->Now());
                        return absl::OkStatus();
                      })
      .status();
}

absl::StatusOr<std::vector<std::string>> WebhookRegistry::KeysOf(const WebhookRecord& r) const {
  std::vector<std::string> keys;
  absl::StatusOr<std::string> current = DecodeSecret(r.webhook.secret());
  if (!current.ok()) return current.status();
  keys.push_back(*current);
  if (!r.previous_secret.empty() && clock_->Now() < r.previous_expires) {
    absl::StatusOr<std::string> previous = DecodeSecret(r.previous_secret);
    if (previous.ok()) keys.push_back(*previous);
  }
  return keys;
}

std::vector<ActiveWebhook> WebhookRegistry::Matching(const std::string& event_type) const {
  absl::MutexLock lock(&mu_);
  std::vector<ActiveWebhook> out;
  for (const auto& [id, r] : records_) {
    if (!r.webhook.active()) continue;
    absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(
        std::vector<std::string>(r.webhook.events().begin(), r.webhook.events().end()), "events");
    if (!filter.ok() || !filter->Matches(event_type)) continue;
    absl::StatusOr<std::vector<std::string>> keys = KeysOf(r);
    if (!keys.ok()) continue;
    out.push_back(ActiveWebhook{Public(r), *std::move(filter), *std::move(keys)});
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> WebhookRegistry::SigningKeys(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return NoWebhook(id);
  return KeysOf(it->second);
}

std::vector<std::string> WebhookRegistry::AllFilters() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [id, r] : records_) {
    if (!r.webhook.active()) continue;
    for (const std::string& e : r.webhook.events()) out.push_back(e);
  }
  return out;
}

std::map<std::string, RateLimitSpec> WebhookRegistry::RateLimits() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, RateLimitSpec> out;
  for (const auto& [id, r] : records_) {
    const v1::RateLimit& rl = r.webhook.rate_limit();
    if (!r.webhook.active() || rl.per_second() <= 0) continue;
    double burst = rl.burst() > 0 ? rl.burst() : std::max(1.0, std::ceil(rl.per_second()));
    out[id] = RateLimitSpec{rl.per_second(), burst};
  }
  return out;
}

}  // namespace switchboard::webhooks
