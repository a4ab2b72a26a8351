#ifndef SWITCHBOARD_LIBS_REDIS_REDIS_CLIENT_H_
#define SWITCHBOARD_LIBS_REDIS_REDIS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "libs/redis/redis_config.h"
#include "libs/redis/reply.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace switchboard::redis {

using Command = std::vector<std::string>;

// A Lua script sent as EVALSHA; the client loads it where Redis answers
// NOSCRIPT (a restarted server, a failed-over Cluster master).
class Script {
 public:
  explicit Script(std::string body);
  const std::string& body() const { return body_; }
  const std::string& sha1() const { return sha1_; }
  // EVALSHA sha numkeys keys... args...
  Command Call(const std::vector<std::string>& keys, const std::vector<std::string>& args) const;
  // The same, moving large arguments (payloads) instead of copying them.
  Command Call(const std::vector<std::string>& keys, std::vector<std::string>&& args) const;

 private:
  std::string body_;
  std::string sha1_;
};

class RedisMetrics;

// Commands written one after another on one connection, their replies read
// later in the same order, so a caller can prepare its next command while
// Redis runs the previous one. Nothing here is retried or redirected: a
// reply the client would have handled (MOVED, ASK, NOSCRIPT, TRYAGAIN,
// CLUSTERDOWN, LOADING, READONLY, MASTERDOWN) comes back as ABORTED, a lost
// connection as UNAVAILABLE or DEADLINE_EXCEEDED; either way the stream is
// done (every later Send and Receive fails) and the caller sends what is
// unanswered again through Pipeline(), in order. Other error replies are
// returned as replies. Used by one thread at a time.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual absl::Status Send(const Command& command, absl::Time deadline) = 0;
  virtual absl::StatusOr<Reply> Receive(absl::Time deadline) = 0;
};

// Talks to one Redis deployment, standalone or Cluster. Thread-safe: each call
// takes a pooled connection for its duration.
//
// Failures: a Redis error reply is returned as a Reply of kError (the caller
// decides), except those the client handles itself: MOVED and ASK (follows the
// redirect), NOSCRIPT (loads the script and sends it again), and on Cluster
// TRYAGAIN, CLUSTERDOWN, LOADING and lost connections (refreshes the topology
// and retries with backoff until the deadline). Standalone fails fast with
// UNAVAILABLE when the server cannot be reached. Because a command may be
// resent after a lost connection, callers send only commands that are safe
// to apply twice (our scripts carry an idempotency token where it matters).
class RedisClient {
 public:
  virtual ~RedisClient() = default;

  // Sends `commands` pipelined, on one connection, to the server owning the
  // Cluster slot of `slot_key` (every key of the commands must hash to that
  // slot); returns one reply per command, in order. When a redirect or retry
  // hits command i, commands i.. are sent again (those before it stand).
  virtual absl::StatusOr<std::vector<Reply>> Pipeline(absl::string_view slot_key,
                                                      const std::vector<Command>& commands,
                                                      absl::Time deadline) = 0;

  absl::StatusOr<Reply> Run(absl::string_view slot_key, Command command, absl::Time deadline);

  // Run, then (min_replicas > 0) WAIT on the same connection until that many
  // replicas have this connection's writes: a write acknowledged after it
  // survives a failover to one of them. UNAVAILABLE when fewer confirm
  // before the deadline (the write itself may have been applied).
  absl::StatusOr<Reply> RunReplicated(absl::string_view slot_key, Command command, int min_replicas,
                                      absl::Time deadline);

  // One PING to the server of `slot_key`: UNAUTHENTICATED when Redis wants
  // credentials the client lacks (or refuses them), UNAVAILABLE when it
  // cannot be reached. What a store checks at start.
  absl::Status Ping(absl::string_view slot_key, absl::Time deadline);

  // A connection of its own to the server owning the slot of `slot_key`,
  // held until the stream is destroyed.
  virtual absl::StatusOr<std::unique_ptr<Stream>> OpenStream(absl::string_view slot_key,
                                                             absl::Time deadline) = 0;

  // Remembers a script so NOSCRIPT can be answered by loading it.
  virtual void Register(const Script& script) = 0;

  // Closes every idle connection; the next call connects again (tests).
  virtual void DropConnections() = 0;
};

// Connects lazily: creating a client never fails for an unreachable server.
std::unique_ptr<RedisClient> NewRedisClient(const RedisConfig& config, RedisMetrics* metrics);

// The Cluster hash slot of a key: CRC16 (XMODEM) of the key, or of the part
// between the first '{' and the next '}' when that is not empty, mod 16384.
int KeySlot(absl::string_view key);

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_REDIS_CLIENT_H_
