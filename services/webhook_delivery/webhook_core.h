#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_CORE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_CORE_H_

#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "libs/broker_client/batching.h"
#include "libs/broker_client/broker_client.h"
#include "services/webhook_delivery/delivery_engine.h"
#include "services/webhook_delivery/delivery_store.h"
#include "services/webhook_delivery/registry.h"
#include "services/webhook_delivery/webhook_metrics.h"

namespace switchboard::webhooks {

struct WebhookCoreOptions {
  std::string group = "webhook-delivery";
  absl::Duration ack_deadline = absl::Seconds(30);
  broker::v1::SubscribeRequest::StartPosition start = broker::v1::SubscribeRequest::LATEST;
  // How often a shared registry is checked for other replicas' changes.
  absl::Duration registry_poll = absl::Milliseconds(250);
};

// webhook-delivery's logic behind its gRPC and JSON edges: the registry, the
// outbox and engine, and the broker subscription (group "webhook-delivery"
// for the union of registered filters, order.* and job.* at least). An event
// is acked only after its deliveries are recorded.
class WebhookCore {
 public:
  WebhookCore(WebhookCoreOptions options, WebhookRegistry* registry, DeliveryStore* store,
              DeliveryEngine* engine, BrokerClient* broker, Clock* clock, WebhookMetrics* metrics);
  ~WebhookCore();

  absl::Status Start();
  void Shutdown();
  bool ready() const;

  absl::StatusOr<v1::Webhook> Register(const v1::RegisterWebhookRequest& request);
  absl::StatusOr<v1::UnregisterWebhookResponse> Unregister(
      const v1::UnregisterWebhookRequest& request);
  absl::StatusOr<v1::ListWebhooksResponse> List(const v1::ListWebhooksRequest& request);
  absl::StatusOr<v1::Webhook> Get(const v1::GetWebhookRequest& request);
  absl::StatusOr<v1::Webhook> Update(const v1::UpdateWebhookRequest& request);
  absl::StatusOr<v1::Webhook> RotateSecret(const v1::RotateSecretRequest& request);
  absl::StatusOr<v1::GetStatsResponse> GetStats();
  absl::StatusOr<v1::ListDeliveriesResponse> ListDeliveries(
      const v1::ListDeliveriesRequest& request);
  absl::StatusOr<v1::RedeliverEventResponse> RedeliverEvent(
      const v1::RedeliverEventRequest& request);
  absl::StatusOr<v1::SendTestEventResponse> SendTestEvent(const v1::SendTestEventRequest& request);

  // Events from the broker (the subscription's thread): queued for
  // sb-intake, which records them in batches.
  void OnDelivery(const broker::v1::Delivery& delivery);
  void OnDeliveries(const google::protobuf::RepeatedPtrField<broker::v1::Delivery>& deliveries);

 private:
  std::set<std::string> WantedFilters() const;
  // Subscribes for WantedFilters() unless the subscription covers them: stops
  // the old subscription (joins its thread) first. Only Start and the
  // subscriber thread call it, never an RPC.
  void EnsureSubscribed() ABSL_LOCKS_EXCLUDED(sub_mu_);
  // What Register and Update call: asks the subscriber thread to run
  // EnsureSubscribed, without waiting for it.
  void RequestResubscribe() ABSL_LOCKS_EXCLUDED(sub_mu_);
  void SubscriberLoop();
  void GaugesLoop();
  void IntakeLoop();
  // Records the deliveries of one intake batch (on a shared registry, only
  // as matched against its current generation).
  absl::StatusOr<int> RecordBatch(const std::vector<const events::v1::Event*>& events);
  // Shared registry: applies other replicas' registrations and changes.
  void RegistrySyncLoop();
  // Re-reads a shared registry; on a change, widens the subscription and
  // wakes the scheduler.
  absl::Status RefreshRegistry();

  const WebhookCoreOptions options_;
  WebhookRegistry* registry_;
  DeliveryStore* store_;
  DeliveryEngine* engine_;
  BrokerClient* broker_;
  Clock* clock_;
  WebhookMetrics* metrics_;
  std::unique_ptr<BatchAcker> acker_;

  mutable absl::Mutex sub_mu_;
  std::set<std::string> subscribed_ ABSL_GUARDED_BY(sub_mu_);
  std::unique_ptr<BrokerSubscription> subscription_ ABSL_GUARDED_BY(sub_mu_);
  bool stopping_ ABSL_GUARDED_BY(sub_mu_) = false;
  bool resubscribe_ ABSL_GUARDED_BY(sub_mu_) = false;
  std::thread subscriber_;
  std::thread gauges_;
  std::thread registry_sync_;
  // Deliveries from the broker wait here; the intake thread records them in
  // batches (one outbox transaction for many events), then acks them.
  absl::Mutex intake_mu_;
  std::vector<broker::v1::Delivery> intake_ ABSL_GUARDED_BY(intake_mu_);
  bool intake_stop_ ABSL_GUARDED_BY(intake_mu_) = false;
  std::thread intake_thread_;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_WEBHOOK_CORE_H_
