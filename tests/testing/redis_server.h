#ifndef SWITCHBOARD_TESTS_TESTING_REDIS_SERVER_H_
#define SWITCHBOARD_TESTS_TESTING_REDIS_SERVER_H_

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchboard::testing {

struct RedisOptions {
  bool appendonly = true;
  std::string appendfsync = "everysec";   // "always", "everysec", "no"
  std::string password;                   // requirepass (and masterauth) when non-empty
  std::vector<std::string> extra_config;  // extra "name value" lines for the config file
};

// A real redis-server (/usr/bin/redis-server) on 127.0.0.1 for integration
// tests, with its config, log, AOF and cluster files in its own temp dir
// (left in place for post-mortems). Not thread-safe.
//
// The server gets PR_SET_PDEATHSIG=SIGKILL so that a crashed test leaves no
// servers behind; Linux ties that to the *thread* that forked, so call
// Start/Restart from a thread that outlives the server (the test's own).
class RedisServer {
 public:
  // A free port (retried when redis-server loses the race for it), daemonize
  // no, protected-mode no, save "" and AOF only when options.appendonly.
  // Returns once PING answers (after AUTH when a password is set); 20 s.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(RedisOptions options = {});
  // cluster-enabled yes, cluster-node-timeout 1000; port and port+10000 free
  // and port <= 55535. Join nodes with RedisCluster.
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartClusterNode(RedisOptions options = {});
  ~RedisServer();

  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string addr() const;  // "127.0.0.1:PORT"
  // "redis://127.0.0.1:PORT", or "redis://:PASSWORD@127.0.0.1:PORT" with the
  // password percent-encoded (as ParseRedisUrl decodes it).
  std::string url() const;
  // -1 when not running.
  pid_t pid() const { return pid_; }
  // Reaps the server if it exited on its own.
  bool running() const;
  const std::string& dir() const { return dir_; }

  // SIGKILL, then reap.
  void Kill9();
  // Starts the server again on the same port with the same dir and config
  // (so data comes back from the AOF, a cluster node from nodes.conf); a
  // server still running is killed (SIGKILL) first. Returns once PING answers
  // and INFO persistence says loading:0; 20 s.
  absl::Status Restart();

  // redis-cli -e -h 127.0.0.1 -p PORT [-a PASSWORD --no-auth-warning] args...
  // Returns stdout without trailing newlines. Because of -e an error reply
  // (NOAUTH, WRONGTYPE, CLUSTERDOWN, ...) is an error status carrying the
  // reply, like a failed connection; args may start with redis-cli options
  // such as "-c". 30 s, then redis-cli is killed.
  absl::StatusOr<std::string> Cli(const std::vector<std::string>& args) const;
  // The server's log file (for test failure messages).
  std::string Log() const;

 private:
  RedisServer(RedisOptions options, bool cluster);
  static absl::StatusOr<std::unique_ptr<RedisServer>> StartImpl(RedisOptions options, bool cluster);
  std::string LogPath() const { return dir_ + "/redis.log"; }
  std::string ConfigPath() const { return dir_ + "/redis.conf"; }
  absl::Status WriteConfig() const;
  // Launches redis-server on port_ and waits for PING and loading:0;
  // *address_in_use when it exited because its port was taken.
  absl::Status StartProcess(absl::Time deadline, bool* address_in_use);

  RedisOptions options_;
  bool cluster_ = false;
  std::string dir_;
  int port_ = 0;
  mutable pid_t pid_ = -1;
};

// masters * (1 + replicas_per_master) cluster nodes joined with
// `redis-cli --cluster create`. Start returns once every node reports
// cluster_state:ok and knows all nodes, the roles add up and every replica's
// master_link_status is up (60 s).
class RedisCluster {
 public:
  // masters >= 3 (redis-cli refuses fewer).
  static absl::StatusOr<std::unique_ptr<RedisCluster>> Start(int masters = 3,
                                                             int replicas_per_master = 1,
                                                             RedisOptions options = {});
  ~RedisCluster();

  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  size_t size() const { return nodes_.size(); }
  RedisServer* node(size_t i) { return nodes_.at(i).get(); }
  // "redis-cluster://127.0.0.1:P1,127.0.0.1:P2,..." over all nodes, or
  // "redis-cluster://:PASSWORD@127.0.0.1:P1,..." with a password
  // (percent-encoded).
  std::string url() const;
  // The node that CLUSTER SLOTS (from the first running node that covers the
  // slot) names as master for `slot`.
  absl::StatusOr<size_t> MasterOf(int slot) const;
  // After node(old_master) was killed: waits until every running node reports
  // cluster_state:ok and names the same running node, not old_master, as
  // master for `slot`; returns that node.
  absl::StatusOr<size_t> WaitForNewMaster(int slot, size_t old_master, absl::Duration timeout);

 private:
  RedisCluster() = default;
  absl::StatusOr<size_t> IndexOfPort(int port) const;

  std::vector<std::unique_ptr<RedisServer>> nodes_;
  std::string password_;
};

// The cluster hash slot of a key: CRC16/XMODEM mod 16384 over the key, or
// over its first non-empty {hash tag}.
int RedisKeySlot(std::string_view key);

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_TESTING_REDIS_SERVER_H_
