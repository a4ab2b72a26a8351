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

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_REDIS_CONFIG_H_
