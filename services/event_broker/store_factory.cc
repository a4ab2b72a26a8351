#include "services/event_broker/store_factory.h"

#include "absl/strings/str_cat.h"
#include "libs/redis/redis_client.h"
#include "services/event_broker/redis_store.h"
#include "services/event_broker/sqlite_store.h"

namespace switchboard::broker {

absl::StatusOr<std::unique_ptr<EventStore>> OpenEventStore(const StoreSettings& s,
                                                           redis::RedisMetrics* redis_metrics,
                                                           std::string* description) {
  if (s.store == "sqlite") {
    absl::StatusOr<SyncPolicy> sync = ParseSyncPolicy(s.sync);
    if (!sync.ok()) return sync.status();
    absl::StatusOr<std::unique_ptr<SqliteEventStore>> store =
        SqliteEventStore::Open(s.data_dir, *sync, s.dedupe);
    if (!store.ok()) return store.status();
    *description = absl::StrCat("sqlite:", s.data_dir);
    return std::unique_ptr<EventStore>(*std::move(store));
  }
  absl::StatusOr<redis::RedisConfig> cfg =
      redis::RedisConfigFromFlags(s.store, s.redis_password_file);
  if (!cfg.ok()) return cfg.status();
  if (absl::Status st = redis::ValidateRedisPrefix(s.redis_prefix); !st.ok()) return st;
  RedisStoreOptions opts;
  opts.prefix = s.redis_prefix;
  opts.timeout = s.redis_timeout;
  opts.index_ttl = s.retention_age;
  opts.dedupe_window = s.dedupe.window;
  if (s.sync == "normal") {
    opts.min_replicas = 0;
  } else if (s.sync == "replicated") {
    if (s.redis_min_replicas < 1) {
      return absl::InvalidArgumentError("redis_min_replicas: must be >= 1 with --sync=replicated");
    }
    opts.min_replicas = s.redis_min_replicas;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "sync: '", s.sync, "' is not a sync policy of the Redis store (normal or replicated)"));
  }
  if (s.redis_timeout < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError("redis_timeout: must be >= 10ms");
  }
  *description = absl::StrCat(cfg->Redacted(), " prefix={", s.redis_prefix, "}");
  return std::unique_ptr<EventStore>(
      std::make_unique<RedisEventStore>(redis::NewRedisClient(*cfg, redis_metrics), opts));
}

}  // namespace switchboard::broker
