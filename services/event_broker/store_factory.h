#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_STORE_FACTORY_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_STORE_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/event_broker/event_store.h"

namespace switchboard::redis {
class RedisMetrics;
}  // namespace switchboard::redis

namespace switchboard::broker {

// The storage flags, as main read them.
struct StoreSettings {
  std::string store = "sqlite";  // sqlite | redis://... | redis-cluster://...
  std::string data_dir;
  std::string sync = "normal";
  std::string redis_prefix = "switchboard";
  std::string redis_password_file;
  int redis_min_replicas = 1;
  absl::Duration redis_timeout = absl::Seconds(5);
  absl::Duration retention_age = absl::Hours(24 * 7);
  DedupeOptions dedupe;
};

// Builds the store the settings describe. Configuration mistakes are
// INVALID_ARGUMENT naming the flag (main exits 2); a Redis store is made
// without contacting Redis (it may come later). `description` gets what to
// log about it (never a password).
absl::StatusOr<std::unique_ptr<EventStore>> OpenEventStore(const StoreSettings& settings,
                                                           redis::RedisMetrics* redis_metrics,
                                                           std::string* description);

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_STORE_FACTORY_H_
