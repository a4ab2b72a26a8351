#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REDIS_WEBHOOK_STORE_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REDIS_WEBHOOK_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "libs/redis/redis_client.h"
#include "services/webhook_delivery/delivery_store.h"
#include "services/webhook_delivery/webhook_store.h"

namespace switchboard::webhooks {

struct RedisWebhookStoreOptions {
  std::string prefix = "switchboard";  // keys carry the hash tag "{prefix}"
  absl::Duration timeout = absl::Seconds(5);
  // How long delivered and failed deliveries stay listed.
  absl::Duration retention = absl::Hours(24 * 7);
  // Replicas that must have a new delivery or a registry change before it is
  // acknowledged (WAIT); 0: the master's word.
  int min_replicas = 0;
};

// The registry in Redis, shared by every webhook-delivery replica. Keys and
// scripts: redis_webhook_scripts.h.
class RedisWebhookStore : public WebhookStore {
 public:
  RedisWebhookStore(std::shared_ptr<redis::RedisClient> client, RedisWebhookStoreOptions options);

  // One round trip: UNAUTHENTICATED when Redis wants credentials this store
  // lacks (or refuses them), UNAVAILABLE when it cannot be reached.
  absl::Status Check();

  bool shared() const override { return true; }
  absl::StatusOr<uint64_t> Put(const WebhookRecord& record) override;
  absl::StatusOr<std::optional<WebhookRecord>> Get(const std::string& id) override;
  absl::StatusOr<bool> Delete(const std::string& id) override;
  absl::StatusOr<std::vector<WebhookRecord>> List() override;
  absl::StatusOr<uint64_t> Generation() override;

 private:
  absl::StatusOr<redis::Reply> Run(redis::Command command, absl::string_view what,
                                   bool replicated = false);

  const std::shared_ptr<redis::RedisClient> client_;
  const RedisWebhookStoreOptions options_;
  const std::string tag_;
  const redis::Script put_, delete_, list_;
};

// The outbox and attempt log in Redis: replicas claim due deliveries under
// leases; per-endpoint concurrency and rate limits hold over all of them.
class RedisDeliveryStore : public DeliveryStore {
 public:
  RedisDeliveryStore(std::shared_ptr<redis::RedisClient> client, RedisWebhookStoreOptions options);

  absl::StatusOr<int> Create(const std::vector<DeliveryRecord>& records) override;
  absl::StatusOr<int> CreateIfRegistryAt(const std::vector<DeliveryRecord>& records,
                                         uint64_t registry_generation) override;
  absl::Status Update(const DeliveryRecord& record) override;
  absl::Status UpdateMany(const std::vector<DeliveryRecord>& records,
                          const std::string& owner) override;
  absl::StatusOr<Claimed> Claim(const ClaimRequest& request) override;
  absl::Status Renew(const std::vector<std::string>& ids, const std::string& owner,
                     absl::Time until) override;
  absl::Status Release(const std::vector<ClaimRef>& claims, const std::string& owner) override;
  absl::StatusOr<absl::Time> NextDue(const std::vector<std::string>& skip_webhooks) override;
  absl::StatusOr<std::vector<DeliveryRecord>> List(const std::string& webhook_id,
                                                   v1::DeliveryStatus status,
                                                   const std::string& event_id,
                                                   size_t limit) override;
  absl::StatusOr<std::map<int, uint64_t>> CountByStatus() override;
  absl::StatusOr<std::pair<uint64_t, uint64_t>> CountPending(absl::Time now) override;

 private:
  absl::StatusOr<redis::Reply> Run(redis::Command command, absl::string_view what,
                                   bool replicated = false);
  absl::Status Write(const std::vector<DeliveryRecord>& records, const std::string& owner);
  // kCreate; `generation` '' writes whatever the registry's generation.
  absl::StatusOr<int> CreateChecked(const std::vector<DeliveryRecord>& records,
                                    const std::string& generation);

  const std::shared_ptr<redis::RedisClient> client_;
  const RedisWebhookStoreOptions options_;
  const std::string tag_;
  const redis::Script create_, write_, claim_, renew_, release_, next_due_, list_;
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REDIS_WEBHOOK_STORE_H_
