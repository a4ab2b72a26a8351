#include "libs/redis/store_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, store, "sqlite",
          "state store: 'sqlite' (embedded, under --data_dir, one replica), "
          "redis://[user:password@]host:port or redis-cluster://host:port[,...] (shared by every "
          "replica; env REDIS_URL)");
ABSL_FLAG(std::string, redis_prefix, "switchboard",
          "hash tag of every Redis key: {prefix}; the deployment's other services use the same");
ABSL_FLAG(std::string, redis_password_file, "",
          "file holding the Redis password (instead of one in the URL)");
ABSL_FLAG(absl::Duration, redis_timeout, absl::Seconds(5), "deadline of one Redis call");
ABSL_FLAG(int32_t, redis_min_replicas, 0,
          "Redis replicas (WAIT) that must have a write before it counts: 0 takes the master's "
          "word; 1 with a replicated Redis (Sentinel, Cluster) survives a failover");

namespace switchboard::redis {

absl::StatusOr<SharedStoreFlags> ReadSharedStoreFlags() {
  SharedStoreFlags out;
  const std::string store = absl::GetFlag(FLAGS_store);
  out.prefix = absl::GetFlag(FLAGS_redis_prefix);
  out.timeout = absl::GetFlag(FLAGS_redis_timeout);
  out.min_replicas = absl::GetFlag(FLAGS_redis_min_replicas);
  if (store == "sqlite") return out;
  out.embedded = false;
  absl::StatusOr<RedisConfig> cfg =
      RedisStoreConfig(store, absl::GetFlag(FLAGS_redis_password_file), out.prefix, out.timeout);
  if (!cfg.ok()) return cfg.status();
  out.config = *std::move(cfg);
  if (out.min_replicas < 0 || out.min_replicas > 16) {
    return absl::InvalidArgumentError("redis_min_replicas: 0 to 16");
  }
  return out;
}

}  // namespace switchboard::redis
