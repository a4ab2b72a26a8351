#ifndef SWITCHBOARD_LIBS_REDIS_CONNECTION_H_
#define SWITCHBOARD_LIBS_REDIS_CONNECTION_H_

// Internal to libs/redis: one hiredis connection and a pool of them per
// server. Only connection.cc includes hiredis.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/redis/redis_client.h"
#include "libs/redis/redis_config.h"
#include "libs/redis/redis_metrics.h"

struct redisContext;

namespace switchboard::redis {

class Connection {
 public:
  // Connects, authenticates and selects the database, all before `deadline`.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const Endpoint& endpoint,
                                                          const RedisConfig& config,
                                                          absl::Time deadline);
  ~Connection();

  // Writes every command, then reads one reply per command. A transport
  // failure (or the deadline) leaves the connection broken(): UNAVAILABLE or
  // DEADLINE_EXCEEDED, and nobody knows which commands Redis applied.
  absl::StatusOr<std::vector<Reply>> Exchange(const std::vector<const Command*>& commands,
                                              absl::Time deadline);
  // The two halves of Exchange, for callers that keep commands in flight:
  // Send writes every command out; Receive reads the oldest reply not yet
  // read. Failures break the connection as in Exchange.
  absl::Status Send(const std::vector<const Command*>& commands, absl::Time deadline);
  absl::StatusOr<Reply> Receive(absl::Time deadline);
  bool broken() const { return broken_; }
  // Exchanges done on this connection (0: it is fresh).
  int uses() const { return uses_; }

 private:
  explicit Connection(redisContext* ctx) : ctx_(ctx) {}
  absl::Status Append(const std::vector<const Command*>& commands, absl::Time deadline);
  absl::StatusOr<Reply> ReadOne(absl::Time deadline);
  redisContext* ctx_;
  bool broken_ = false;
  std::string wbuf_;  // formatted commands on their way out
  int uses_ = 0;
};

// The connections to one server: up to config.max_connections_per_node, each
// used by one caller at a time.
class Pool {
 public:
  Pool(Endpoint endpoint, const RedisConfig* config, RedisMetrics* metrics)
      : endpoint_(std::move(endpoint)), config_(config), metrics_(metrics) {}
  ~Pool();

  const Endpoint& endpoint() const { return endpoint_; }
  absl::StatusOr<std::unique_ptr<Connection>> Acquire(absl::Time deadline);
  // A broken connection is closed (and the idle ones with it: when one
  // connection to a server broke, the others most likely did too).
  void Release(std::unique_ptr<Connection> connection);
  // Closes a healthy connection nobody else may use (replies still on
  // their way to it), leaving the others be.
  void Discard(std::unique_ptr<Connection> connection);
  void DropIdle();

 private:
  const Endpoint endpoint_;
  const RedisConfig* const config_;
  RedisMetrics* const metrics_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  // The last connection to this server broke: the next one is a reconnect.
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace switchboard::redis

#endif  // SWITCHBOARD_LIBS_REDIS_CONNECTION_H_
