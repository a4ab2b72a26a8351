#include "services/webhook_delivery/webhook_core.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/thread_name.h"

namespace switchboard::webhooks {
namespace {

// Does some subscribed filter already cover `filter`?
bool Covered(const std::set<std::string>& subscribed, const std::string& filter) {
  if (subscribed.count("*") || subscribed.count(filter)) return true;
  absl::StatusOr<TypeFilter> f =
      TypeFilter::Parse(std::vector<std::string>(subscribed.begin(), subscribed.end()));
  if (!f.ok()) return false;
  if (filter.size() > 2 && filter.compare(filter.size() - 2, 2, ".*") == 0) {
    // A prefix is covered by an equal or broader prefix.
    for (const std::string& s : subscribed) {
      if (s.size() > 2 && s.compare(s.size() - 2, 2, ".*") == 0 &&
          filter.compare(0, s.size() - 1, s, 0, s.size() - 1) == 0) {
        return true;
      }
    }
    return false;
  }
  return f->Matches(filter);
}

}  // namespace

WebhookCore::WebhookCore(WebhookCoreOptions options, WebhookRegistry* registry,
                         DeliveryStore* store, DeliveryEngine* engine, BrokerClient* broker,
                         Clock* clock, WebhookMetrics* metrics)
    : options_(std::move(options)),
      registry_(registry),
      store_(store),
      engine_(engine),
      broker_(broker),
      clock_(clock),
      metrics_(metrics),
      acker_(std::make_unique<BatchAcker>(broker, options_.group)) {}

WebhookCore::~WebhookCore() { Shutdown(); }

std::set<std::string> WebhookCore::WantedFilters() const {
  std::set<std::string> wanted = {"order.*", "job.*"};
  for (const std::string& f : registry_->AllFilters()) {
    if (!Covered(wanted, f)) wanted.insert(f);
  }
  if (wanted.count("*")) return {"*"};
  return wanted;
}

void WebhookCore::EnsureSubscribed() {
  std::set<std::string> wanted = WantedFilters();
  std::unique_ptr<BrokerSubscription> old;
  {
    absl::MutexLock lock(&sub_mu_);
    if (stopping_) return;
    bool all_covered = subscription_ != nullptr;
    for (const std::string& f : wanted) all_covered &= Covered(subscribed_, f);
    if (all_covered) return;
    old = std::move(subscription_);
  }
  // The group keeps its position: events published while it switches wait
  // in the broker.
  if (old != nullptr) old->Stop();
  broker::v1::SubscribeRequest req;
  req.set_group(options_.group);
  for (const std::string& f : wanted) req.add_types(f);
  req.set_start(options_.start);
  *req.mutable_ack_deadline() = ToProtoDuration(options_.ack_deadline);
  req.set_max_in_flight(2000);
  req.set_max_deliveries(100);
  // A stream message at a time (SubscribeBatched): one gRPC message and one
  // intake lock for as many events as the broker had ready.
  auto sub = broker_->SubscribeGroupBatched(
      req, [this](const broker::v1::DeliveryBatch& b) { OnDeliveries(b.deliveries()); });
  LogInfo("subscribed to the broker",
          {{"group", options_.group},
           {"types", absl::StrJoin(std::vector<std::string>(wanted.begin(), wanted.end()), ",")}});
  absl::MutexLock lock(&sub_mu_);
  subscribed_ = wanted;
  subscription_ = std::move(sub);
}

absl::Status WebhookCore::Start() {
  intake_thread_ = std::thread([this] { IntakeLoop(); });
  EnsureSubscribed();
  subscriber_ = std::thread([this] { SubscriberLoop(); });
  gauges_ = std::thread([this] { GaugesLoop(); });
  if (registry_->shared()) registry_sync_ = std::thread([this] { RegistrySyncLoop(); });
  return absl::OkStatus();
}

void WebhookCore::RegistrySyncLoop() {
  SetThreadName("sb-registry");
  while (true) {
    {
      absl::MutexLock lock(&sub_mu_);
      if (sub_mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.registry_poll)) return;
    }
    absl::Status s = RefreshRegistry();
    if (!s.ok()) LogWarn("reading the shared registry failed", {{"error", s.ToString()}});
  }
}

absl::Status WebhookCore::RefreshRegistry() {
  absl::StatusOr<bool> changed = registry_->Refresh();
  if (!changed.ok()) return changed.status();
  if (*changed) {
    RequestResubscribe();  // a new filter elsewhere may need more types
    engine_->Kick();       // an endpoint enabled elsewhere has due deliveries
  }
  return absl::OkStatus();
}

void WebhookCore::RequestResubscribe() {
  absl::MutexLock lock(&sub_mu_);
  resubscribe_ = true;
}

// Resubscribing stops the old subscription, which joins its thread: never on
// an RPC's thread. One thread does it, so two registrations cannot race to
// replace the subscription, and Shutdown joins it before taking the last one.
void WebhookCore::SubscriberLoop() {
  SetThreadName("sb-resubscribe");
  while (true) {
    {
      absl::MutexLock lock(&sub_mu_);
      auto wake = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(sub_mu_) { return resubscribe_ || stopping_; };
      sub_mu_.Await(absl::Condition(&wake));
      if (stopping_) return;
      resubscribe_ = false;
    }
    EnsureSubscribed();
  }
}

void WebhookCore::Shutdown() {
  {
    absl::MutexLock lock(&sub_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  // No subscription is made after this: the only thread that makes them is
  // done, and EnsureSubscribed checks stopping_.
  if (subscriber_.joinable()) subscriber_.join();
  std::unique_ptr<BrokerSubscription> sub;
  {
    absl::MutexLock lock(&sub_mu_);
    sub = std::move(subscription_);
  }
  // Once it is stopped no OnDelivery runs; then the intake thread (the only
  // caller of the engine's RecordAll) finishes, before the engine stops.
  if (sub != nullptr) sub->Stop();
  {
    absl::MutexLock lock(&intake_mu_);
    intake_stop_ = true;
  }
  if (intake_thread_.joinable()) intake_thread_.join();
  acker_->Flush();
  if (gauges_.joinable()) gauges_.join();
  if (registry_sync_.joinable()) registry_sync_.join();
}

bool WebhookCore::ready() const {
  absl::MutexLock lock(&sub_mu_);
  return subscription_ != nullptr && subscription_->connected();
}

void WebhookCore::GaugesLoop() {
  SetThreadName("sb-gauges");
  while (true) {
    {
      absl::MutexLock lock(&sub_mu_);
      if (sub_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1))) return;
    }
    if (metrics_ == nullptr) continue;
    absl::StatusOr<std::pair<uint64_t, uint64_t>> pending = store_->CountPending(clock_->Now());
    if (pending.ok()) {
      metrics_->queue_depth.Add({{"state", "due"}}).Set(static_cast<double>(pending->first));
      metrics_->queue_depth.Add({{"state", "scheduled"}}).Set(static_cast<double>(pending->second));
    }
    uint64_t active = 0, disabled = 0;
    for (const v1::Webhook& w : registry_->List()) (w.active() ? active : disabled)++;
    metrics_->registered.Add({{"state", "active"}}).Set(static_cast<double>(active));
    metrics_->registered.Add({{"state", "disabled"}}).Set(static_cast<double>(disabled));
  }
}

void WebhookCore::OnDelivery(const broker::v1::Delivery& d) {
  absl::MutexLock lock(&intake_mu_);
  intake_.push_back(d);
}

void WebhookCore::OnDeliveries(
    const google::protobuf::RepeatedPtrField<broker::v1::Delivery>& deliveries) {
  absl::MutexLock lock(&intake_mu_);
  intake_.insert(intake_.end(), deliveries.begin(), deliveries.end());
}

// A registration made on another replica a moment ago matches the batch too:
// on a shared registry the outbox takes the batch only while the registry is
// at the generation it was matched against, in the same step (before, a
// separate read of the generation per batch, one more Redis round trip on
// every event's way). When it moved: the registry is read again, and the
// batch matched again.
absl::StatusOr<int> WebhookCore::RecordBatch(const std::vector<const events::v1::Event*>& events) {
  if (!registry_->shared()) return engine_->RecordAll(events, std::nullopt);
  constexpr int kTries = 3;
  for (int i = 0; i < kTries; ++i) {
    absl::StatusOr<int> recorded = engine_->RecordAll(events, registry_->generation());
    if (!absl::IsAborted(recorded.status())) return recorded;
    if (absl::Status s = RefreshRegistry(); !s.ok()) return s;
  }
  return absl::AbortedError(
      absl::StrCat("the webhook registry changed at each of ", kTries, " tries"));
}

void WebhookCore::IntakeLoop() {
  SetThreadName("sb-intake");
  while (true) {
    std::vector<broker::v1::Delivery> batch;
    {
      absl::MutexLock lock(&intake_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(intake_mu_) {
        return !intake_.empty() || intake_stop_;
      };
      intake_mu_.Await(absl::Condition(&ready));
      if (intake_.empty()) return;  // stopping; what was never recorded was never acked
      batch.swap(intake_);
    }
    std::vector<const events::v1::Event*> events;
    for (const auto& d : batch) events.push_back(&d.event());
    absl::StatusOr<int> recorded = RecordBatch(events);
    if (!recorded.ok()) {
      LogError("recording deliveries failed", {{"events", static_cast<uint64_t>(batch.size())},
                                               {"error", recorded.status().ToString()}});
      std::vector<std::string> ids;
      for (const auto& d : batch) ids.push_back(d.ack_id());
      absl::Status s =
          broker_->Nack(options_.group, ids, absl::Seconds(1),
                        absl::StrCat("recording deliveries failed: ", recorded.status().message()),
                        absl::Seconds(5));
      if (!s.ok()) LogWarn("nack failed", {{"error", s.ToString()}});
      continue;
    }
    // Recorded durably first: a crash before the ack only means a redelivery,
    // which the outbox's (webhook, event) key absorbs.
    for (const auto& d : batch) acker_->Ack(d.ack_id());
  }
}

absl::StatusOr<v1::Webhook> WebhookCore::Register(const v1::RegisterWebhookRequest& req) {
  absl::StatusOr<v1::Webhook> w = registry_->Register(req);
  if (w.ok()) RequestResubscribe();
  return w;
}

absl::StatusOr<v1::UnregisterWebhookResponse> WebhookCore::Unregister(
    const v1::UnregisterWebhookRequest& req) {
  if (absl::Status s = registry_->Unregister(req.id()); !s.ok()) return s;
  return v1::UnregisterWebhookResponse();
}

absl::StatusOr<v1::ListWebhooksResponse> WebhookCore::List(const v1::ListWebhooksRequest&) {
  v1::ListWebhooksResponse resp;
  for (v1::Webhook& w : registry_->List()) *resp.add_webhooks() = std::move(w);
  return resp;
}

absl::StatusOr<v1::Webhook> WebhookCore::Get(const v1::GetWebhookRequest& req) {
  if (req.id().empty()) return absl::InvalidArgumentError("id: required");
  return registry_->GetFresh(req.id());
}

absl::StatusOr<v1::Webhook> WebhookCore::Update(const v1::UpdateWebhookRequest& req) {
  absl::StatusOr<v1::Webhook> w = registry_->Update(req);
  if (w.ok()) {
    RequestResubscribe();
    engine_->Kick();
  }
  return w;
}

absl::StatusOr<v1::Webhook> WebhookCore::RotateSecret(const v1::RotateSecretRequest& req) {
  return registry_->RotateSecret(req);
}

absl::StatusOr<v1::GetStatsResponse> WebhookCore::GetStats() {
  absl::StatusOr<std::map<int, uint64_t>> counts = store_->CountByStatus();
  if (!counts.ok()) return counts.status();
  v1::GetStatsResponse resp;
  uint64_t disabled = 0;
  std::vector<v1::Webhook> all = registry_->List();
  for (const v1::Webhook& w : all) disabled += !w.active();
  resp.set_registered_webhooks(all.size());
  resp.set_disabled_webhooks(disabled);
  resp.set_delivered_webhooks((*counts)[v1::DELIVERY_STATUS_DELIVERED]);
  resp.set_failed_webhooks((*counts)[v1::DELIVERY_STATUS_FAILED]);
  resp.set_queued_webhooks((*counts)[v1::DELIVERY_STATUS_PENDING]);
  return resp;
}

absl::StatusOr<v1::ListDeliveriesResponse> WebhookCore::ListDeliveries(
    const v1::ListDeliveriesRequest& req) {
  if (req.limit() > 1000) return absl::InvalidArgumentError("limit: at most 1000");
  if (!req.webhook_id().empty()) {
    if (absl::StatusOr<v1::Webhook> w = registry_->GetFresh(req.webhook_id()); !w.ok()) {
      return absl::NotFoundError(absl::StrCat("webhook_id: no webhook '", req.webhook_id(), "'"));
    }
  }
  absl::StatusOr<std::vector<DeliveryRecord>> list =
      store_->List(req.webhook_id(), req.status(), req.event_id(), req.limit() ? req.limit() : 100);
  if (!list.ok()) return list.status();
  v1::ListDeliveriesResponse resp;
  for (DeliveryRecord& r : *list) *resp.add_deliveries() = std::move(r.delivery);
  return resp;
}

absl::StatusOr<v1::RedeliverEventResponse> WebhookCore::RedeliverEvent(
    const v1::RedeliverEventRequest& req) {
  if (req.event_id().empty()) return absl::InvalidArgumentError("event_id: required");
  absl::StatusOr<std::vector<DeliveryRecord>> list =
      store_->List(req.webhook_id(), v1::DELIVERY_STATUS_UNSPECIFIED, req.event_id(), 1000);
  if (!list.ok()) return list.status();
  if (list->empty()) {
    return absl::NotFoundError(
        absl::StrCat("event_id: no delivery of '", req.event_id(), "'",
                     req.webhook_id().empty() ? "" : absl::StrCat(" to '", req.webhook_id(), "'")));
  }
  v1::RedeliverEventResponse resp;
  absl::Time now = clock_->Now();
  for (DeliveryRecord& r : *list) {
    // A fresh cycle of attempts with the same body and webhook-id.
    r.delivery.set_status(v1::DELIVERY_STATUS_PENDING);
    r.delivery.clear_attempts();
    r.next_attempt = now;
    *r.delivery.mutable_next_attempt_at() = ToProtoTime(now);
    if (absl::Status s = store_->Update(r); !s.ok()) return s;
    *resp.add_deliveries() = r.delivery;
  }
  engine_->Kick();
  return resp;
}

absl::StatusOr<v1::SendTestEventResponse> WebhookCore::SendTestEvent(
    const v1::SendTestEventRequest& req) {
  if (req.webhook_id().empty()) return absl::InvalidArgumentError("webhook_id: required");
  std::string type = req.event_type().empty() ? "webhook.test" : req.event_type();
  if (!IsValidEventType(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("event_type: '", type, "' is not an event type like 'order.created'"));
  }
  events::v1::Event ev;
  ev.set_id(NewId("evt"));
  ev.set_type(type);
  ev.set_source("webhook-delivery");
  *ev.mutable_time() = ToProtoTime(clock_->Now());
  if (req.has_data()) {
    *ev.mutable_data() = req.data();
  } else {
    (*ev.mutable_data()->mutable_fields())["message"].set_string_value("test event");
  }
  absl::StatusOr<v1::WebhookDelivery> d = engine_->RecordFor(req.webhook_id(), ev);
  if (!d.ok()) return d.status();
  v1::SendTestEventResponse resp;
  *resp.mutable_delivery() = *std::move(d);
  return resp;
}

}  // namespace switchboard::webhooks
