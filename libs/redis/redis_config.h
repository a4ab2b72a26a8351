#ifndef SWITCHBOARD_LIBS_REDIS_REDIS_CONFIG_H_
#define SWITCHBOARD_LIBS_REDIS_REDIS_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace switchboard::redis {

struct Endpoint {
  std::string host;
  int port = 6379;
  std::string ToString() const;
  bool operator==(const Endpoint& o) const { return host == o.host && port == o.port; }
};

// Where a deployment's Redis is and how to talk to it. Built from a URL:
//   redis://[user:password@]host:port[/db]              one server
//   redis-cluster://[user:password@]host:port[,host:port...]  Cluster seeds
struct RedisConfig {
  bool cluster = false;
  std::vector<Endpoint> seeds;
  std::string user;  // ACL user; empty = "default"
  std::string password;
  int db = 0;
  absl::Duration connect_timeout = absl::Seconds(2);
  // Connections kept per server; callers beyond it wait for one. A broker
  // has up to ~12 callers at once (writer, tail, filler, housekeeping,
  // executors).
  int max_connections_per_node = 16;

  // The URL with the password replaced by "***", for logs.
  std::string Redacted() const;
};

// Parses a store URL. Errors name `flag` ("store: ...") and never echo the
// password.
absl::StatusOr<RedisConfig> ParseRedisUrl(absl::string_view url, absl::string_view flag);

// The storage flags every service shares: --store ('sqlite' or a Redis URL,
// REDIS_URL in the environment), --redis_password_file, --redis_prefix.
// Whether a --store value names Redis (redis://, rediss://, redis-cluster://).
bool IsRedisStoreUrl(absl::string_view store);
// The Redis configuration of --store (a Redis URL), the password read from
// `password_file` when one is given. INVALID_ARGUMENT naming the flag for a
// store that is neither 'sqlite' nor Redis (showing only its scheme: the rest
// may hold a password), a bad URL, or an unreadable or empty password file.
absl::StatusOr<RedisConfig> RedisConfigFromFlags(absl::string_view store,
                                                 const std::string& password_file);
// --redis_prefix: 1 to 64 of [A-Za-z0-9_-.:] (it becomes the "{prefix}" hash
// tag of every key).
absl::Status ValidateRedisPrefix(const std::string& prefix);
// What a shared store of a worker or webhook-delivery replica takes from
// --store, --redis_password_file, --redis_prefix and --redis_timeout, each
// checked (INVALID_ARGUMENT naming the flag).
absl::StatusOr<RedisConfig> RedisStoreConfig(absl::string_view store,
                                             const std::string& password_file,
                                             const std::string& prefix, absl::Duration timeout);

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_REDIS_CONFIG_H_
