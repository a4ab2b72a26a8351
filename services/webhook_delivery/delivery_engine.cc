#include "services/webhook_delivery/delivery_engine.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/backoff.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/thread_name.h"
#include "services/webhook_delivery/signing.h"

namespace switchboard::webhooks {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) { return ToProtoTime(t); }
absl::Duration FromProto(const google::protobuf::Duration& d) { return FromProtoDuration(d); }

// Retry-After is seconds or an HTTP date; only the seconds form is honoured.
absl::Duration RetryAfter(const std::string& value) {
  int64_t secs;
  if (absl::SimpleAtoi(value, &secs) && secs >= 0) return absl::Seconds(secs);
  return absl::ZeroDuration();
}

}  // namespace

std::string DeliveryBody(const events::v1::Event& event) {
  std::string data = "{}";
  if (event.has_data()) {
    data.clear();
    (void)google::protobuf::util::MessageToJsonString(event.data(), &data);
  }
  std::string created = event.has_time() ? TimeUtil::ToString(event.time()) : "";
  return absl::StrCat("{\"id\":", JsonQuote(event.id()), ",\"event\":", JsonQuote(event.type()),
                      ",\"created\":", JsonQuote(created), ",\"data\":", data, "}");
}

DeliveryEngine::DeliveryEngine(EngineConfig config, WebhookRegistry* registry, DeliveryStore* store,
                               HttpSender* sender, Clock* clock, WebhookMetrics* metrics)
    : config_(std::move(config)),
      owner_(config_.owner.empty() ? NewId("wd") : config_.owner),
      registry_(registry),
      store_(store),
      sender_(sender),
      clock_(clock),
      metrics_(metrics),
      resolvers_(std::make_unique<Executor>("sb-resolve", config_.resolver_threads,
                                            static_cast<size_t>(config_.max_in_flight))) {}

DeliveryEngine::~DeliveryEngine() { Stop(); }

void DeliveryEngine::Start() {
  thread_ = std::thread([this] { Run(); });
}

// The sender's and the resolvers' callbacks point into this engine: both are
// stopped before Stop returns, so nothing calls back into a destroyed engine
// and a transfer still in flight (up to its timeout) does not delay shutdown.
void DeliveryEngine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  resolvers_.reset();  // queued lookups see stop_ and leave their deliveries due
  sender_->Stop();
  // Answers that arrived before the sender stopped are recorded, so a
  // delivered webhook is not sent again after a restart.
  absl::MutexLock lock(&mu_);
  while (!outcomes_.empty()) {
    Outcome o = std::move(outcomes_.front());
    outcomes_.pop_front();
    Finish(std::move(o));
  }
  FlushFinished();
  // What was claimed and never answered goes back to the outbox now, so
  // another replica need not wait for the leases to run out.
  std::vector<ClaimRef> give_back;
  give_back.swap(unattempted_);
  give_back.insert(give_back.end(), in_flight_.begin(), in_flight_.end());
  GiveBackLocked(give_back);
}

void DeliveryEngine::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

DeliveryRecord DeliveryEngine::NewRecord(const std::string& webhook_id,
                                         const events::v1::Event& event,
                                         const std::string& body) const {
  DeliveryRecord r;
  absl::Time now = clock_->Now();
  r.delivery.set_id(NewId("dlv"));
  r.delivery.set_webhook_id(webhook_id);
  r.delivery.set_event_id(event.id());
  r.delivery.set_event_type(event.type());
  r.delivery.set_status(v1::DELIVERY_STATUS_PENDING);
  *r.delivery.mutable_created_at() = ToProto(now);
  *r.delivery.mutable_next_attempt_at() = ToProto(now);
  r.body = body;
  r.next_attempt = now;
  return r;
}

absl::StatusOr<int> DeliveryEngine::Record(const events::v1::Event& event) {
  return RecordAll({&event}, std::nullopt);
}

absl::StatusOr<int> DeliveryEngine::RecordAll(const std::vector<const events::v1::Event*>& events,
                                              std::optional<uint64_t> registry_generation) {
  std::vector<DeliveryRecord> records;
  for (const events::v1::Event* event : events) {
    std::vector<ActiveWebhook> targets = registry_->Matching(event->type());
    if (targets.empty()) continue;
    std::string body = DeliveryBody(*event);
    for (const ActiveWebhook& w : targets) {
      records.push_back(NewRecord(w.webhook.id(), *event, body));
    }
  }
  // Matching nothing is checked too: the registry may have gained a
  // webhook that matches.
  if (records.empty() && !registry_generation) return 0;
  absl::StatusOr<int> created = registry_generation
                                    ? store_->CreateIfRegistryAt(records, *registry_generation)
                                    : store_->Create(records);
  if (created.ok() && *created > 0) Kick();
  return created;
}

absl::StatusOr<v1::WebhookDelivery> DeliveryEngine::RecordFor(const std::string& webhook_id,
                                                              const events::v1::Event& event) {
  absl::StatusOr<v1::Webhook> w = registry_->GetFresh(webhook_id);
  if (!w.ok()) return w.status();
  DeliveryRecord r = NewRecord(webhook_id, event, DeliveryBody(event));
  absl::StatusOr<int> created = store_->Create({r});
  if (!created.ok()) return created.status();
  Kick();
  return r.delivery;
}

void DeliveryEngine::Run() {
  SetThreadName("sb-deliver");
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    while (!outcomes_.empty()) {
      Outcome o = std::move(outcomes_.front());
      outcomes_.pop_front();
      Finish(std::move(o));
    }
    FlushFinished();
    const bool kicked = kicked_;
    kicked_ = false;
    RenewLeases();
    ClaimAndDispatch();
    // Leases are renewed at a third of their length at least.
    absl::Duration longest = std::min(absl::Seconds(1), config_.lease / 3);
    // When the next delivery is due costs a store round trip. Rounds come
    // as fast as outcomes do (each claim already takes what is due now), so
    // the answer is asked for at most every kNextDueReuse unless something
    // was created or changed here (a kick); a reused answer lets the loop
    // sleep no longer than that before it asks again.
    const absl::Time now = clock_->Now();
    if (kicked || now >= next_due_asked_ + kNextDueReuse || now < next_due_asked_) {
      // Deliveries of saturated endpoints wait for an outcome (which wakes
      // this loop), not for their due time.
      std::vector<std::string> skip = SaturatedLocked();
      mu_.Unlock();
      absl::StatusOr<absl::Time> next = store_->NextDue(skip);
      mu_.Lock();
      next_due_ = next.ok() ? *next : absl::InfiniteFuture();
      next_due_asked_ = now;
    } else {
      longest =
          std::max(absl::Milliseconds(5), std::min(longest, next_due_asked_ + kNextDueReuse - now));
    }
    absl::Time wake_at = next_due_;
    for (const auto* waits : {&throttled_, &full_}) {
      for (const auto& [webhook_id, until] : *waits) wake_at = std::min(wake_at, until);
    }
    absl::Duration wait = std::clamp(wake_at - clock_->Now(), absl::Milliseconds(5), longest);
    auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || kicked_ || !outcomes_.empty();
    };
    mu_.AwaitWithTimeout(absl::Condition(&wake), wait);
  }
}

void DeliveryEngine::ClaimAndDispatch() {
  int room = config_.max_in_flight - static_cast<int>(in_flight_.size());
  if (room <= 0) return;
  ClaimRequest req;
  req.now = clock_->Now();
  for (auto* waits : {&throttled_, &full_}) {
    for (auto it = waits->begin(); it != waits->end();) {
      it = it->second <= req.now ? waits->erase(it) : std::next(it);
    }
  }
  req.limit = static_cast<size_t>(room);
  req.skip_webhooks = SaturatedLocked();
  req.owner = owner_;
  req.lease = config_.lease;
  req.max_per_webhook = config_.max_in_flight_per_webhook;
  req.request_id = NewId("claim");
  mu_.Unlock();
  req.rate_limits = registry_->RateLimits();
  absl::StatusOr<Claimed> claimed = store_->Claim(req);
  // A webhook registered on another replica a moment ago is looked up in the
  // store before its delivery is taken for unregistered; when the lookup
  // fails, its deliveries go back (they are not failed on a store hiccup).
  std::set<std::string> unknown;
  if (claimed.ok()) {
    std::set<std::string> looked_up;
    for (const DeliveryRecord& r : claimed->records) {
      const std::string& id = r.delivery.webhook_id();
      if (!looked_up.insert(id).second) continue;
      absl::StatusOr<v1::Webhook> w = registry_->GetFresh(id);
      if (!w.ok() && !absl::IsNotFound(w.status())) unknown.insert(id);
    }
  }
  mu_.Lock();
  if (!claimed.ok()) {
    LogError("claiming due deliveries failed", {{"error", claimed.status().ToString()}});
    return;
  }
  for (const auto& [webhook_id, until] : claimed->throttled) throttled_[webhook_id] = until;
  // Full with other replicas' deliveries: looked at again shortly, not at
  // every round (an outcome elsewhere does not wake this replica).
  for (const std::string& webhook_id : claimed->full) {
    full_[webhook_id] = req.now + absl::Milliseconds(50);
  }
  if (metrics_ != nullptr && !claimed->throttled.empty()) {
    metrics_->throttled.Increment(static_cast<double>(claimed->throttled.size()));
  }
  std::vector<ClaimRef> give_back;
  for (DeliveryRecord& r : claimed->records) {
    ClaimRef ref{r.delivery.id(), r.claim};
    if (stop_) {
      unattempted_.push_back(ref);
    } else if (resolving_.count(r.delivery.webhook_id()) ||
               unknown.count(r.delivery.webhook_id())) {
      // One resolution per endpoint at a time: a hanging resolver holds one
      // pool thread, and the endpoint's other deliveries go back to wait.
      give_back.push_back(ref);
    } else if (in_flight_.count(r.delivery.id())) {
      // In flight here under an older claim that lapsed or was replaced
      // (a redelivery): that attempt's result will not be written; the
      // delivery goes back and is sent again.
      give_back.push_back(ref);
    } else {
      Dispatch(std::move(r));
    }
  }
  if (metrics_ != nullptr) metrics_->in_flight.Set(static_cast<double>(in_flight_.size()));
  GiveBackLocked(give_back);
  FlushFinished();
}

void DeliveryEngine::GiveBackLocked(const std::vector<ClaimRef>& claims) {
  if (claims.empty()) return;
  mu_.Unlock();
  absl::Status s = store_->Release(claims, owner_);
  mu_.Lock();
  if (!s.ok()) LogWarn("giving back deliveries failed", {{"error", s.ToString()}});
}

void DeliveryEngine::RenewLeases() {
  absl::Time now = clock_->Now();
  if (in_flight_.empty() || now - last_renew_ < config_.lease / 3) return;
  last_renew_ = now;
  std::vector<std::string> ids;
  for (const auto& [id, claim] : in_flight_) ids.push_back(id);
  mu_.Unlock();
  absl::Status s = store_->Renew(ids, owner_, now + config_.lease);
  mu_.Lock();
  if (!s.ok()) LogWarn("renewing delivery leases failed", {{"error", s.ToString()}});
}

std::vector<std::string> DeliveryEngine::SaturatedLocked() const {
  std::vector<std::string> out(resolving_.begin(), resolving_.end());
  for (const auto& [webhook_id, n] : per_webhook_) {
    if (n >= config_.max_in_flight_per_webhook && !resolving_.count(webhook_id)) {
      out.push_back(webhook_id);
    }
  }
  absl::Time now = clock_->Now();
  for (const auto* waits : {&throttled_, &full_}) {
    for (const auto& [webhook_id, until] : *waits) {
      if (until > now && !resolving_.count(webhook_id)) out.push_back(webhook_id);
    }
  }
  return out;
}

void DeliveryEngine::Dispatch(DeliveryRecord record) {
  const std::string webhook_id = record.delivery.webhook_id();
  absl::StatusOr<v1::Webhook> webhook = registry_->Get(webhook_id);
  absl::Time now = clock_->Now();
  auto fail_now = [&](const std::string& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Outcome o{std::move(record), HttpResult{}, now};
    o.result.error = error;
    Finish(std::move(o));
  };
  if (!webhook.ok() || !webhook->active()) {
    fail_now(webhook.ok() ? "endpoint disabled: " + webhook->disabled_reason()
                          : "webhook unregistered");
    return;
  }
  absl::StatusOr<std::vector<std::string>> keys = registry_->SigningKeys(webhook_id);
  if (!keys.ok()) {
    fail_now(std::string(keys.status().message()));
    return;
  }
  in_flight_[record.delivery.id()] = record.claim;
  per_webhook_[webhook_id]++;
  auto shared = std::make_shared<DeliveryRecord>(std::move(record));
  auto cached = targets_.find(webhook_id);
  if (cached != targets_.end() && cached->second.url == webhook->url() &&
      cached->second.expires > now) {
    SendLocked(std::move(shared), *webhook, *keys, cached->second.curl_resolve, now);
    return;
  }
  // Not vetted lately: resolve on the pool, never on this thread (DNS can
  // hang, and this thread serves every endpoint).
  resolving_.insert(webhook_id);
  bool queued = resolvers_ != nullptr && resolvers_->Submit([this, shared, w = *std::move(webhook),
                                                             k = *std::move(keys), now]() mutable {
    Resolve(std::move(shared), std::move(w), std::move(k), now);
  });
  if (!queued) {
    // Stopping: the delivery stays due in the outbox.
    resolving_.erase(webhook_id);
    ReleaseSlotLocked(*shared);
  }
}

void DeliveryEngine::ReleaseSlotLocked(const DeliveryRecord& record, bool attempted) {
  const std::string& webhook_id = record.delivery.webhook_id();
  if (in_flight_.erase(record.delivery.id()) > 0 && --per_webhook_[webhook_id] <= 0) {
    per_webhook_.erase(webhook_id);
  }
  if (!attempted) unattempted_.push_back({record.delivery.id(), record.claim});
  if (metrics_ != nullptr) metrics_->in_flight.Set(static_cast<double>(in_flight_.size()));
}

void DeliveryEngine::Resolve(std::shared_ptr<DeliveryRecord> record, v1::Webhook webhook,
                             std::vector<std::string> keys, absl::Time now) {
  // The endpoint is vetted again when its last check is older than
  // target_ttl: DNS may have changed. This may block (a slow resolver), so it
  // runs without mu_.
  {
    absl::MutexLock lock(&mu_);
    if (stop_) {
      // Shutting down: no lookup (it may hang); the delivery stays due.
      resolving_.erase(webhook.id());
      ReleaseSlotLocked(*record);
      return;
    }
  }
  absl::StatusOr<WebhookUrl> url = ParseWebhookUrl(webhook.url());
  absl::StatusOr<VettedTarget> target = url.ok() ? VetTarget(*url, config_.targets, config_.resolve)
                                                 : absl::StatusOr<VettedTarget>(url.status());
  // A slow lookup must not date the attempt: it is signed and recorded now.
  now = clock_->Now();
  absl::MutexLock lock(&mu_);
  resolving_.erase(webhook.id());
  kicked_ = true;  // the endpoint's other due deliveries may go now
  if (stop_) {
    // Stopped during the lookup: nothing is sent (it would be abandoned).
    ReleaseSlotLocked(*record);
    return;
  }
  if (!target.ok()) {
    Outcome o{std::move(*record), HttpResult{}, now};
    o.result.error = std::string(target.status().message());
    outcomes_.push_back(std::move(o));
    return;
  }
  targets_[webhook.id()] =
      VettedEntry{webhook.url(), target->curl_resolve, clock_->Now() + config_.target_ttl};
  SendLocked(std::move(record), webhook, keys, target->curl_resolve, now);
}

void DeliveryEngine::SendLocked(std::shared_ptr<DeliveryRecord> record, const v1::Webhook& webhook,
                                const std::vector<std::string>& keys,
                                const std::string& curl_resolve, absl::Time now) {
  int64_t ts = absl::ToUnixSeconds(now);
  const std::string& msg_id = record->delivery.event_id();
  std::string signature = SignatureHeader(keys, msg_id, ts, record->body);
  HttpCall call;
  call.url = webhook.url();
  call.body = record->body;
  call.timeout = webhook.has_timeout() ? FromProto(webhook.timeout()) : absl::Seconds(30);
  call.resolve = curl_resolve;
  call.headers = {{"Content-Type", "application/json"},
                  {"webhook-id", msg_id},
                  {"webhook-timestamp", absl::StrCat(ts)},
                  {"webhook-signature", signature},
                  {"X-Webhook-Event", record->delivery.event_type()},
                  {"X-Webhook-ID", webhook.id()},
                  {"X-Webhook-Signature", signature}};
  sender_->Send(std::move(call), [this, record, now](HttpResult result) {
    absl::MutexLock lock(&mu_);
    outcomes_.push_back(Outcome{std::move(*record), std::move(result), now});
  });
}

void DeliveryEngine::Finish(Outcome o) {
  v1::WebhookDelivery& d = o.record.delivery;
  const std::string webhook_id = d.webhook_id();
  ReleaseSlotLocked(o.record, /*attempted=*/true);
  full_.erase(webhook_id);  // a slot of the endpoint is free (once this is written)
  v1::DeliveryAttempt* attempt = d.add_attempts();
  attempt->set_attempt(d.attempts_size());
  *attempt->mutable_time() = ToProto(o.sent_at);
  attempt->set_http_status(o.result.status);
  *attempt->mutable_latency() = ToProtoDuration(o.result.latency);
  attempt->set_response_body(o.result.body);
  const int status = o.result.status;
  if (status == 0) {
    attempt->set_error(o.result.timed_out ? "timeout: " + o.result.error : o.result.error);
  } else if (status < 200 || status >= 300) {
    attempt->set_error(absl::StrCat("HTTP ", status));
  }
  if (metrics_ != nullptr) {
    std::string cls =
        status == 0 ? (o.result.timed_out ? "timeout" : "error") : absl::StrCat(status / 100, "xx");
    metrics_->attempts.Add({{"result", cls}}).Increment();
    if (status != 0) metrics_->latency.Observe(absl::ToDoubleSeconds(o.result.latency));
  }
  absl::StatusOr<v1::Webhook> webhook = registry_->Get(webhook_id);
  uint32_t max_attempts = 1 + (webhook.ok() ? webhook->retry_attempts() : 0);
  absl::Time now = clock_->Now();
  if (status >= 200 && status < 300) {
    d.set_status(v1::DELIVERY_STATUS_DELIVERED);
    d.clear_next_attempt_at();
  } else if (status == 410) {
    d.set_status(v1::DELIVERY_STATUS_FAILED);
    d.clear_next_attempt_at();
    if (webhook.ok()) to_disable_.push_back(webhook_id);
  } else if (static_cast<uint32_t>(d.attempts_size()) >= max_attempts || !webhook.ok() ||
             !webhook->active()) {
    d.set_status(v1::DELIVERY_STATUS_FAILED);
    d.clear_next_attempt_at();
  } else {
    // Exponential backoff with jitter from the webhook's retry_delay.
    absl::Duration base =
        webhook->has_retry_delay() ? FromProto(webhook->retry_delay()) : absl::Seconds(5);
    absl::Duration delay =
        BackoffDelay(BackoffPolicy{base, 2.0, config_.max_backoff, 0.2},
                     static_cast<uint32_t>(d.attempts_size()), absl::Uniform(rng_, 0.0, 1.0));
    if (status == 429 || status == 503) {
      delay = std::max(delay, std::min(RetryAfter(o.result.retry_after), config_.max_retry_after));
    }
    o.record.next_attempt = now + delay;
    *d.mutable_next_attempt_at() = ToProto(o.record.next_attempt);
  }
  if (metrics_ != nullptr && d.status() != v1::DELIVERY_STATUS_PENDING) {
    metrics_->deliveries
        .Add({{"outcome", d.status() == v1::DELIVERY_STATUS_DELIVERED ? "delivered" : "failed"},
              {"event_type", d.event_type()}})
        .Increment();
  }
  finished_.push_back(std::move(o.record));
}

void DeliveryEngine::FlushFinished() {
  if (finished_.empty() && to_disable_.empty()) return;
  std::vector<DeliveryRecord> batch;
  batch.swap(finished_);
  std::vector<std::string> disable;
  disable.swap(to_disable_);
  mu_.Unlock();
  // Disabled before the 410 is recorded: whoever sees the failed delivery
  // sees the endpoint disabled.
  for (const std::string& webhook_id : disable) {
    absl::Status d = registry_->Disable(webhook_id, "410 Gone from the endpoint");
    if (d.ok()) {
      if (metrics_ != nullptr) metrics_->endpoints_disabled.Increment();
      LogWarn("webhook disabled: endpoint answered 410 Gone", {{"webhook_id", webhook_id}});
    } else if (!absl::IsNotFound(d)) {
      LogError("disabling a webhook failed", {{"webhook_id", webhook_id}, {"error", d.ToString()}});
    }
  }
  absl::Status s = batch.empty() ? absl::OkStatus() : store_->UpdateMany(batch, owner_);
  mu_.Lock();
  if (!s.ok()) LogError("recording delivery attempts failed", {{"error", s.ToString()}});
}

}  // namespace switchboard::webhooks
