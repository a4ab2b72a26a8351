// RedisCluster and RedisKeySlot (declared in redis_server.h).
#include <signal.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/redis_support.h"

namespace switchboard::testing {
namespace {

using redis_internal::InfoField;
using redis_internal::kClusterTimeout;
using redis_internal::kPoll;
using redis_internal::kRedisCliBin;
using redis_internal::kSlots;
using redis_internal::PercentEncode;
using redis_internal::QueryText;
using redis_internal::Run;
using redis_internal::RunResult;
using redis_internal::SlotMasterPort;

}  // namespace

absl::StatusOr<std::unique_ptr<RedisCluster>> RedisCluster::Start(int masters,
                                                                  int replicas_per_master,
                                                                  RedisOptions options) {
  if (masters < 3 || replicas_per_master < 0) {
    return absl::InvalidArgumentError(absl::StrCat("a cluster needs >= 3 masters and >= 0 replicas",
                                                   " each, not ", masters, " and ",
                                                   replicas_per_master));
  }
  std::unique_ptr<RedisCluster> cluster(new RedisCluster());
  cluster->password_ = options.password;
  const size_t total = static_cast<size_t>(masters) * (1 + replicas_per_master);
  std::vector<std::string> argv = {kRedisCliBin, "--cluster", "create"};
  for (size_t i = 0; i < total; ++i) {
    absl::StatusOr<std::unique_ptr<RedisServer>> node = RedisServer::StartClusterNode(options);
    if (!node.ok()) return node.status();
    argv.push_back((*node)->addr());
    cluster->nodes_.push_back(*std::move(node));
  }
  argv.insert(argv.end(),
              {"--cluster-replicas", absl::StrCat(replicas_per_master), "--cluster-yes"});
  if (!options.password.empty()) {
    argv.insert(argv.end(), {"-a", options.password, "--no-auth-warning"});
  }
  absl::StatusOr<RunResult> create = Run(argv, kClusterTimeout);
  if (!create.ok()) return create.status();
  if (create->exit_code != 0) {
    return absl::InternalError(absl::StrCat("redis-cli --cluster create: exit ", create->exit_code,
                                            ":\n", create->out, create->err));
  }

  // --cluster create returns once the configs agree; slots are served only
  // when every node says ok, and failover needs replicas in sync.
  std::string last;
  bool ready = WaitUntil(
      [&] {
        int masters_seen = 0;
        int replicas_seen = 0;
        for (size_t i = 0; i < total; ++i) {
          int port = cluster->nodes_[i]->port();
          absl::StatusOr<std::string> info =
              QueryText(port, cluster->password_, {"CLUSTER", "INFO"});
          if (!info.ok()) {
            last = absl::StrCat("node ", i, ": ", info.status().ToString());
            return false;
          }
          if (InfoField(*info, "cluster_state") != "ok" ||
              InfoField(*info, "cluster_known_nodes") != absl::StrCat(total)) {
            last = absl::StrCat("node ", i, ": cluster_state:", InfoField(*info, "cluster_state"),
                                " cluster_known_nodes:", InfoField(*info, "cluster_known_nodes"));
            return false;
          }
          absl::StatusOr<std::string> repl =
              QueryText(port, cluster->password_, {"INFO", "replication"});
          if (!repl.ok()) {
            last = absl::StrCat("node ", i, ": ", repl.status().ToString());
            return false;
          }
          if (InfoField(*repl, "role") == "master") {
            ++masters_seen;
          } else if (InfoField(*repl, "master_link_status") == "up") {
            ++replicas_seen;
          } else {
            last = absl::StrCat("node ", i,
                                ": master_link_status:", InfoField(*repl, "master_link_status"));
            return false;
          }
        }
        if (masters_seen != masters || replicas_seen != masters * replicas_per_master) {
          last = absl::StrCat(masters_seen, " masters and ", replicas_seen, " replicas");
          return false;
        }
        return true;
      },
      kClusterTimeout, kPoll);
  if (!ready) {
    return absl::DeadlineExceededError(absl::StrCat("cluster not ready within ",
                                                    absl::FormatDuration(kClusterTimeout), " (",
                                                    last, "); redis-cli said:\n", create->out));
  }
  return cluster;
}

RedisCluster::~RedisCluster() {
  // SIGKILL everyone first: nodes killed one by one would fail over among
  // themselves in between.
  for (const std::unique_ptr<RedisServer>& node : nodes_) {
    if (node->pid() > 0) kill(node->pid(), SIGKILL);
  }
  nodes_.clear();
}

std::string RedisCluster::url() const {
  std::vector<std::string> addrs;
  for (const std::unique_ptr<RedisServer>& node : nodes_) addrs.push_back(node->addr());
  std::string auth = password_.empty() ? "" : absl::StrCat(":", PercentEncode(password_), "@");
  return absl::StrCat("redis-cluster://", auth, absl::StrJoin(addrs, ","));
}

absl::StatusOr<size_t> RedisCluster::IndexOfPort(int port) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->port() == port) return i;
  }
  return absl::InternalError(absl::StrCat("port ", port, " is not a node of this cluster"));
}

absl::StatusOr<size_t> RedisCluster::MasterOf(int slot) const {
  if (slot < 0 || slot >= kSlots) {
    return absl::InvalidArgumentError(absl::StrCat("no slot ", slot));
  }
  absl::Status last = absl::UnavailableError("no running node");
  for (const std::unique_ptr<RedisServer>& node : nodes_) {
    if (!node->running()) continue;
    absl::StatusOr<int> port = SlotMasterPort(node->port(), password_, slot);
    if (port.ok()) return IndexOfPort(*port);
    last = port.status();
  }
  return last;
}

absl::StatusOr<size_t> RedisCluster::WaitForNewMaster(int slot, size_t old_master,
                                                      absl::Duration timeout) {
  if (slot < 0 || slot >= kSlots) {
    return absl::InvalidArgumentError(absl::StrCat("no slot ", slot));
  }
  if (old_master >= nodes_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("no node ", old_master));
  }
  size_t new_master = 0;
  std::string last = "no running node";
  // Every running node must agree: a client may ask any of them and would
  // otherwise be redirected to the dead master.
  bool done = WaitUntil(
      [&] {
        std::optional<size_t> agreed;
        for (size_t i = 0; i < nodes_.size(); ++i) {
          if (!nodes_[i]->running()) continue;
          int port = nodes_[i]->port();
          absl::StatusOr<std::string> info = QueryText(port, password_, {"CLUSTER", "INFO"});
          if (!info.ok()) {
            last = absl::StrCat("node ", i, ": ", info.status().ToString());
            return false;
          }
          if (InfoField(*info, "cluster_state") != "ok") {
            last = absl::StrCat("node ", i, ": cluster_state:", InfoField(*info, "cluster_state"));
            return false;
          }
          absl::StatusOr<int> master_port = SlotMasterPort(port, password_, slot);
          if (!master_port.ok()) {
            last = absl::StrCat("node ", i, ": ", master_port.status().ToString());
            return false;
          }
          absl::StatusOr<size_t> master = IndexOfPort(*master_port);
          if (!master.ok()) {
            last = master.status().ToString();
            return false;
          }
          if (*master == old_master || !nodes_[*master]->running() ||
              (agreed.has_value() && *agreed != *master)) {
            last = absl::StrCat("node ", i, " names node ", *master, " as master of slot ", slot);
            return false;
          }
          agreed = *master;
        }
        if (!agreed.has_value()) return false;
        new_master = *agreed;
        return true;
      },
      timeout, kPoll);
  if (!done) {
    return absl::DeadlineExceededError(absl::StrCat("no new master for slot ", slot, " within ",
                                                    absl::FormatDuration(timeout), ": ", last));
  }
  return new_master;
}

int RedisKeySlot(std::string_view key) {
  // Keys sharing a {tag} share a slot, so multi-key commands can span them.
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  uint16_t crc = 0;  // CRC16/XMODEM: polynomial 0x1021, initial value 0
  for (unsigned char c : key) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc % kSlots;
}

}  // namespace switchboard::testing
