#ifndef SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REGISTRY_H_
#define SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REGISTRY_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/clock.h"
#include "libs/common/event_rules.h"
#include "services/webhook_delivery/delivery_store.h"
#include "services/webhook_delivery/target_guard.h"
#include "services/webhook_delivery/webhook_store.h"

namespace switchboard::webhooks {

struct RegistryConfig {
  // Defaults for registrations that leave them out (env WEBHOOK_MAX_RETRIES,
  // WEBHOOK_RETRY_DELAY in ms, WEBHOOK_TIMEOUT in ms).
  uint32_t default_retry_attempts = 5;
  absl::Duration default_retry_delay = absl::Milliseconds(5000);
  absl::Duration default_timeout = absl::Milliseconds(30000);
  TargetPolicy targets;  // the SSRF guard: what besides public addresses
  // How long the previous secret keeps signing after RotateSecret.
  absl::Duration rotation_overlap = absl::Hours(24);
  Resolver resolve = SystemResolve;
};

// A webhook as the delivery engine needs it: its filter and signing keys.
struct ActiveWebhook {
  v1::Webhook webhook;  // secret cleared
  TypeFilter filter;
  std::vector<std::string> keys;  // HMAC keys that sign now (1, or 2 during a rotation)
};

// The registry of SPEC §5: validation, secrets, rotation, persistence. The
// gRPC service and the JSON API are thin adapters over it.
class WebhookRegistry {
 public:
  WebhookRegistry(RegistryConfig config, WebhookStore* store, Clock* clock);
  absl::Status Load();
  // Re-reads the store when another replica changed it (its generation
  // moved); true when the registry changed.
  absl::StatusOr<bool> Refresh();
  bool shared() const { return store_->shared(); }
  // The store's generation the cache was last listed at. Published after the
  // cache itself: whoever reads it then matches against that listing or a
  // newer one (a check against it is never more lenient than the cache).
  uint64_t generation() const { return listed_generation_.load(std::memory_order_acquire); }

  absl::StatusOr<v1::Webhook> Register(const v1::RegisterWebhookRequest& request);
  absl::StatusOr<v1::Webhook> Update(const v1::UpdateWebhookRequest& request);
  absl::Status Unregister(const std::string& id);
  absl::StatusOr<v1::Webhook> Get(const std::string& id) const;
  // Get, but on a shared store a webhook not known here is looked up there
  // (another replica may have registered it since the last Refresh).
  absl::StatusOr<v1::Webhook> GetFresh(const std::string& id);
  std::vector<v1::Webhook> List() const;
  absl::StatusOr<v1::Webhook> RotateSecret(const v1::RotateSecretRequest& request);
  // Marks an endpoint inactive (410 Gone) with a reason.
  absl::Status Disable(const std::string& id, const std::string& reason);

  // Active webhooks whose filters match `event_type`, with their keys.
  std::vector<ActiveWebhook> Matching(const std::string& event_type) const;
  // The HMAC keys that sign for a webhook now (2 during a rotation).
  absl::StatusOr<std::vector<std::string>> SigningKeys(const std::string& id) const;
  // Every filter of every active webhook (the broker subscription's types).
  std::vector<std::string> AllFilters() const;
  // The rate limits of the active webhooks that have one.
  std::map<std::string, RateLimitSpec> RateLimits() const;

 private:
  // Applies `change` to webhook `id` and stores it. On a shared store the
  // record is read from the store first, and a write that lost a race with
  // another replica is made again on what that replica wrote.
  absl::StatusOr<WebhookRecord> MutateLocked(
      const std::string& id, const std::function<absl::Status(WebhookRecord&)>& change)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ValidateTarget(const std::string& url) const;
  absl::StatusOr<std::vector<std::string>> KeysOf(const WebhookRecord& r) const;
  static v1::Webhook Public(const WebhookRecord& r);

  const RegistryConfig config_;
  WebhookStore* const store_;
  Clock* const clock_;
  // Writers (changes, Refresh, GetFresh's lookups) hold write_mu_ across
  // their store calls, one at a time; mu_ guards the cache and is held only
  // briefly, so readers never wait for the store. Order: write_mu_, mu_.
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, WebhookRecord> records_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(write_mu_) = 0;  // of the store, when last listed
  absl::Time listed_at_ ABSL_GUARDED_BY(write_mu_) = absl::InfinitePast();
  bool loaded_ ABSL_GUARDED_BY(write_mu_) = false;
  std::atomic<uint64_t> listed_generation_{0};
};

}  // namespace switchboard::webhooks

#endif  // SWITCHBOARD_SERVICES_WEBHOOK_DELIVERY_REGISTRY_H_
