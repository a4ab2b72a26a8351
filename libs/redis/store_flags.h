#ifndef SWITCHBOARD_LIBS_REDIS_STORE_FLAGS_H_
#define SWITCHBOARD_LIBS_REDIS_STORE_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/redis/redis_config.h"

namespace switchboard::redis {

// The storage flags job-worker and webhook-delivery share, defined once:
//   --store                 'sqlite' (embedded, one replica) or a Redis URL (REDIS_URL)
//   --redis_prefix          the "{prefix}" hash tag of every key
//   --redis_password_file   the password, instead of one in the URL
//   --redis_timeout         the deadline of one Redis call
//   --redis_min_replicas    replicas WAIT must confirm before a write counts
struct SharedStoreFlags {
  bool embedded = true;  // --store=sqlite
  RedisConfig config;    // the rest only when !embedded
  std::string prefix;
  absl::Duration timeout;
  int min_replicas = 0;
};

// The flags, checked: INVALID_ARGUMENT naming the flag for any mistake.
absl::StatusOr<SharedStoreFlags> ReadSharedStoreFlags();

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_STORE_FLAGS_H_
