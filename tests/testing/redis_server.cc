#include "tests/testing/redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_support.h"

namespace switchboard::testing {
namespace {

using redis_internal::InfoField;
using redis_internal::kCliTimeout;
using redis_internal::kClusterBusOffset;
using redis_internal::kHost;
using redis_internal::kMaxClusterPort;
using redis_internal::kPoll;
using redis_internal::kPortAttempts;
using redis_internal::kRedisCliBin;
using redis_internal::kRedisServerBin;
using redis_internal::kStartTimeout;
using redis_internal::PercentEncode;
using redis_internal::QueryText;
using redis_internal::Remaining;
using redis_internal::Run;
using redis_internal::RunResult;
using redis_internal::Spawn;

std::string StripTrailingNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Binds 127.0.0.1:port (0: any) as redis-server will, with SO_REUSEADDR, and
// returns the bound port; the port is free again once the socket is closed.
absl::StatusOr<int> ProbePort(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:", port, ": ", strerror(err)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

absl::StatusOr<int> PickPort(bool cluster) {
  absl::Status last = absl::UnavailableError("no port tried");
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<int> port = ProbePort(0);
    if (!port.ok()) {
      last = port.status();
      continue;
    }
    if (!cluster) return port;
    int candidate = *port;
    if (candidate > kMaxClusterPort) {
      // Still random, but with room for the bus port.
      candidate = 1024 + candidate % (kMaxClusterPort - 1024);
      if (absl::Status s = ProbePort(candidate).status(); !s.ok()) {
        last = s;
        continue;
      }
    }
    absl::StatusOr<int> bus = ProbePort(candidate + kClusterBusOffset);
    if (bus.ok()) return candidate;
    last = bus.status();
  }
  return absl::UnavailableError(absl::StrCat("no free port: ", last.message()));
}

// Redis splits config lines like a shell: quoting keeps a path or password
// with spaces or quotes one argument.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
      case '\\':
        out += '\\';
        out += c;
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += c;
    }
  }
  out += '"';
  return out;
}

absl::StatusOr<std::string> MakeRedisDir() {
  std::string dir = MakeTempDir("redis");
  if (dir.empty()) return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  return dir;
}

}  // namespace

RedisServer::RedisServer(RedisOptions options, bool cluster)
    : options_(std::move(options)), cluster_(cluster) {}

RedisServer::~RedisServer() { Kill9(); }

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(RedisOptions options) {
  return StartImpl(std::move(options), /*cluster=*/false);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartClusterNode(RedisOptions options) {
  return StartImpl(std::move(options), /*cluster=*/true);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::StartImpl(RedisOptions options,
                                                                    bool cluster) {
  if (options.appendfsync != "always" && options.appendfsync != "everysec" &&
      options.appendfsync != "no") {
    return absl::InvalidArgumentError(
        absl::StrCat("appendfsync must be always, everysec or no, not ", options.appendfsync));
  }
  std::unique_ptr<RedisServer> server(new RedisServer(std::move(options), cluster));
  absl::StatusOr<std::string> dir = MakeRedisDir();
  if (!dir.ok()) return dir.status();
  server->dir_ = *std::move(dir);
  absl::Time deadline = absl::Now() + kStartTimeout;
  absl::Status last;
  // Between the probe closing its socket and redis-server binding, another
  // process may take the port: that attempt fails fast and we pick again.
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    absl::StatusOr<int> port = PickPort(cluster);
    if (!port.ok()) return port.status();
    server->port_ = *port;
    // A lost race leaves a log (and a cluster node a nodes.conf) naming the
    // old port.
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(server->dir_, ec)) {
      std::filesystem::remove_all(entry.path(), ec);
    }
    if (absl::Status s = server->WriteConfig(); !s.ok()) return s;
    bool address_in_use = false;
    last = server->StartProcess(deadline, &address_in_use);
    if (last.ok()) return server;
    if (!address_in_use) return last;
  }
  return absl::UnavailableError(absl::StrCat("redis-server lost the race for a free port ",
                                             kPortAttempts, " times; last: ", last.message()));
}

absl::Status RedisServer::WriteConfig() const {
  std::vector<std::string> lines = {
      "# Written by tests/testing/redis_server.cc; Restart() starts from it again.",
      absl::StrCat("bind ", kHost),
      absl::StrCat("port ", port_),
      "daemonize no",
      "protected-mode no",
      absl::StrCat("dir ", Quote(dir_)),
      absl::StrCat("logfile ", Quote(LogPath())),
      "save \"\"",
      absl::StrCat("appendonly ", options_.appendonly ? "yes" : "no"),
      absl::StrCat("appendfsync ", options_.appendfsync),
      // A master otherwise waits 5 s for more replicas before a full sync,
      // which every new or restarted replica would add to a test.
      "repl-diskless-sync-delay 0",
  };
  if (!options_.password.empty()) {
    lines.push_back(absl::StrCat("requirepass ", Quote(options_.password)));
    // Replicas (of a cluster) authenticate to their masters with it.
    lines.push_back(absl::StrCat("masterauth ", Quote(options_.password)));
  }
  if (cluster_) {
    lines.push_back("cluster-enabled yes");
    lines.push_back(absl::StrCat("cluster-config-file ", Quote(dir_ + "/nodes.conf")));
    lines.push_back("cluster-node-timeout 1000");
  }
  // Last, so that they override the above (Redis keeps the last value).
  lines.insert(lines.end(), options_.extra_config.begin(), options_.extra_config.end());
  std::ofstream out(ConfigPath(), std::ios::trunc);
  out << absl::StrJoin(lines, "\n") << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", ConfigPath()));
  return absl::OkStatus();
}

absl::Status RedisServer::StartProcess(absl::Time deadline, bool* address_in_use) {
  *address_in_use = false;
  // Only this run's part of the log says why it exited (Restart appends).
  size_t log_offset = Log().size();
  // stdout/stderr catch what redis-server prints before it opens its logfile
  // (config errors); O_APPEND keeps both writers from overwriting each other.
  int log_fd = open(LogPath().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", LogPath(), ": ", strerror(errno)));
  }
  absl::StatusOr<pid_t> pid = Spawn({kRedisServerBin, ConfigPath()}, log_fd, log_fd);
  close(log_fd);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;

  std::string last = "no answer yet";
  const std::string pid_text = absl::StrCat(pid_);
  bool ready = WaitUntil(
      [&] {
        if (!running()) return true;
        absl::StatusOr<std::string> pong = QueryText(port_, options_.password, {"PING"});
        if (!pong.ok() || *pong != "PONG") {
          last = pong.ok() ? *pong : pong.status().ToString();
          return false;
        }
        absl::StatusOr<std::string> info =
            QueryText(port_, options_.password, {"INFO", "server", "persistence"});
        if (!info.ok()) {
          last = info.status().ToString();
          return false;
        }
        // Whoever won the race for our port may answer PING too.
        if (InfoField(*info, "process_id") != pid_text) {
          last = absl::StrCat("port ", port_, " is served by pid ", InfoField(*info, "process_id"));
          return false;
        }
        if (InfoField(*info, "loading") != "0") {
          last = "still loading";
          return false;
        }
        return true;
      },
      Remaining(deadline), kPoll);
  if (!running()) {
    std::string log = Log();
    log.erase(0, std::min(log_offset, log.size()));
    *address_in_use = absl::StrContains(log, "Address already in use");
    return absl::UnavailableError(
        absl::StrCat("redis-server on port ", port_, " exited during startup; log:\n", log));
  }
  if (!ready) {
    Kill9();
    return absl::DeadlineExceededError(
        absl::StrCat("redis-server on port ", port_, " not ready (", last, "); log:\n", Log()));
  }
  return absl::OkStatus();
}

std::string RedisServer::addr() const { return absl::StrCat(kHost, ":", port_); }

std::string RedisServer::url() const {
  if (options_.password.empty()) return absl::StrCat("redis://", addr());
  return absl::StrCat("redis://:", PercentEncode(options_.password), "@", addr());
}

bool RedisServer::running() const {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return false;
  }
  return true;
}

void RedisServer::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  Kill9();
  absl::Time deadline = absl::Now() + kStartTimeout;
  while (true) {
    // The port is ours by config (and by nodes.conf for a cluster node):
    // wait for it to be free rather than move.
    bool free = WaitUntil(
        [&] {
          return ProbePort(port_).ok() && (!cluster_ || ProbePort(port_ + kClusterBusOffset).ok());
        },
        Remaining(deadline), kPoll);
    if (!free) return absl::UnavailableError(absl::StrCat("port ", port_, " stays taken"));
    bool address_in_use = false;
    absl::Status s = StartProcess(deadline, &address_in_use);
    if (s.ok() || !address_in_use || absl::Now() > deadline) return s;
  }
}

absl::StatusOr<std::string> RedisServer::Cli(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {kRedisCliBin, "-e", "-h", kHost, "-p", absl::StrCat(port_)};
  if (!options_.password.empty()) {
    argv.insert(argv.end(), {"-a", options_.password, "--no-auth-warning"});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<RunResult> run = Run(argv, kCliTimeout);
  if (!run.ok()) return run.status();
  if (run->exit_code != 0) {
    return absl::UnknownError(
        absl::StrCat("redis-cli -p ", port_, " ", absl::StrJoin(args, " "), ": exit ",
                     run->exit_code, ": ", StripTrailingNewlines(run->err),
                     run->out.empty() ? "" : "; stdout: ", StripTrailingNewlines(run->out)));
  }
  return StripTrailingNewlines(std::move(run->out));
}

std::string RedisServer::Log() const { return ReadFile(LogPath()); }
}  // namespace switchboard::testing
