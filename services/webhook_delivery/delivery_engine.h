#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_ENGINE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_ENGINE_H_

#include <deque>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/clock.h"
#include "libs/common/executor.h"
#include "services/webhook_delivery/delivery_store.h"
#include "services/webhook_delivery/http_sender.h"
#include "services/webhook_delivery/registry.h"
#include "services/webhook_delivery/webhook_metrics.h"
#include "switchboard/events/v1/event.pb.h"

namespace switchboard::webhooks {

struct EngineConfig {
  TargetPolicy targets;               // the SSRF guard, re-checked before attempts
  int max_in_flight = 256;            // all endpoints
  int max_in_flight_per_webhook = 8;  // one slow endpoint cannot take every slot
  // Threads that resolve and vet endpoints (DNS can hang). Each endpoint
  // resolves one attempt at a time, so a hanging resolver holds one thread.
  int resolver_threads = 8;
  // A vetted endpoint address is reused this long before it is resolved and
  // checked again (curl's own DNS cache keeps 60 s).
  absl::Duration target_ttl = absl::Seconds(5);
  absl::Duration max_backoff = absl::Hours(1);
  absl::Duration max_retry_after = absl::Hours(1);
  // A claimed delivery is this replica's until the lease runs out; it is
  // renewed every lease/3 while the attempt runs, so only a replica that
  // died (or lost the store that long) lets it go to another.
  absl::Duration lease = absl::Seconds(30);
  // This replica in the outbox's leases; generated when empty.
  std::string owner;
  Resolver resolve = SystemResolve;
};

// The body every attempt of an event's delivery sends (SPEC §5):
// {"id":"evt_…","event":"order.created","created":"<RFC 3339>","data":{…}}
std::string DeliveryBody(const events::v1::Event& event);

// Records deliveries for events (before their broker ack) and sends them:
// signed, with retries and backoff, Retry-After on 429/503, 410 disabling the
// endpoint, per-endpoint and global concurrency limits.
class DeliveryEngine {
 public:
  DeliveryEngine(EngineConfig config, WebhookRegistry* registry, DeliveryStore* store,
                 HttpSender* sender, Clock* clock, WebhookMetrics* metrics = nullptr);
  ~DeliveryEngine();

  void Start();
  void Stop();

  // One delivery per matching webhook, durably recorded. Idempotent per
  // (webhook, event). Returns how many were new.
  absl::StatusOr<int> Record(const events::v1::Event& event);
  // Record for many events in one transaction (the intake batches). With a
  // registry generation, written only while the shared registry is still
  // at it (DeliveryStore::CreateIfRegistryAt: kAborted when it moved).
  absl::StatusOr<int> RecordAll(const std::vector<const events::v1::Event*>& events,
                                std::optional<uint64_t> registry_generation);
  // Records a delivery to one webhook regardless of its filters (test events,
  // redelivery).
  absl::StatusOr<v1::WebhookDelivery> RecordFor(const std::string& webhook_id,
                                                const events::v1::Event& event);
  // Wakes the scheduler (new deliveries are due).
  void Kick();

 private:
  struct Outcome {
    DeliveryRecord record;
    HttpResult result;
    absl::Time sent_at;
  };
  void Run();
  // Reserves the endpoint's slot and hands the attempt to the resolver pool.
  void Dispatch(DeliveryRecord record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On a resolver thread: vets the endpoint (DNS), signs, sends.
  void Resolve(std::shared_ptr<DeliveryRecord> record, v1::Webhook webhook,
               std::vector<std::string> keys, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  // Frees the endpoint's slot; `attempted` false: the delivery goes back to
  // the outbox unattempted (given back at Stop).
  void ReleaseSlotLocked(const DeliveryRecord& record, bool attempted = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Claims due deliveries from the outbox and dispatches them.
  void ClaimAndDispatch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RenewLeases() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases claims in the store, with mu_ released meanwhile.
  void GiveBackLocked(const std::vector<ClaimRef>& claims) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Webhooks that can take no delivery now (at their limit, or resolving).
  std::vector<std::string> SaturatedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(std::shared_ptr<DeliveryRecord> record, const v1::Webhook& webhook,
                  const std::vector<std::string>& keys, const std::string& curl_resolve,
                  absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Computes the attempt's consequences; the record is written with the
  // other outcomes of the same round, in one transaction.
  void Finish(Outcome outcome) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FlushFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DeliveryRecord NewRecord(const std::string& webhook_id, const events::v1::Event& event,
                           const std::string& body) const;

  const EngineConfig config_;
  const std::string owner_;
  WebhookRegistry* registry_;
  DeliveryStore* store_;
  HttpSender* sender_;
  Clock* clock_;
  WebhookMetrics* metrics_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, uint64_t> in_flight_ ABSL_GUARDED_BY(mu_);  // delivery id -> claim
  std::map<std::string, int> per_webhook_ ABSL_GUARDED_BY(mu_);     // webhook id -> in flight
  std::set<std::string> resolving_ ABSL_GUARDED_BY(mu_);            // webhook ids
  // Endpoints over their rate limit, until their next token.
  std::map<std::string, absl::Time> throttled_ ABSL_GUARDED_BY(mu_);
  // Endpoints full with every replica's deliveries, looked at again at the
  // time given or when an attempt of ours to them ends (freeing a slot).
  std::map<std::string, absl::Time> full_ ABSL_GUARDED_BY(mu_);
  std::vector<ClaimRef> unattempted_ ABSL_GUARDED_BY(mu_);  // claimed, dropped at stop
  // Endpoints that answered 410 Gone: disabled by FlushFinished, without mu_
  // (the registry may write to a remote store).
  std::vector<std::string> to_disable_ ABSL_GUARDED_BY(mu_);
  absl::Time last_renew_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The store's last answer to NextDue, and when it was asked (Run).
  static constexpr absl::Duration kNextDueReuse = absl::Milliseconds(10);
  absl::Time next_due_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time next_due_asked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  struct VettedEntry {
    std::string url;
    std::string curl_resolve;
    absl::Time expires;
  };
  std::map<std::string, VettedEntry> targets_ ABSL_GUARDED_BY(mu_);  // by webhook id
  std::deque<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
  std::vector<DeliveryRecord> finished_ ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Executor> resolvers_;
  std::thread thread_;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_DELIVERY_ENGINE_H_
