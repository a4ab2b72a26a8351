#include "tests/testing/redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "tests/testing/process.h"

extern char** environ;

namespace switchboard::testing {
namespace {

constexpr char kRedisServerBin[] = "/usr/bin/redis-server";
constexpr char kRedisCliBin[] = "/usr/bin/redis-cli";
constexpr char kHost[] = "127.0.0.1";
// A cluster node also listens on port + 10000 (the cluster bus).
constexpr int kClusterBusOffset = 10000;
constexpr int kMaxClusterPort = 65535 - kClusterBusOffset;
constexpr int kPortAttempts = 20;
constexpr int kSlots = 16384;
constexpr absl::Duration kStartTimeout = absl::Seconds(20);
constexpr absl::Duration kCliTimeout = absl::Seconds(30);
constexpr absl::Duration kClusterTimeout = absl::Seconds(60);
// Per read or write on the harness's own connections: a live server answers
// PING and INFO at once, a stopped one must not stall a WaitUntil poll.
constexpr absl::Duration kIoTimeout = absl::Seconds(2);
constexpr absl::Duration kPoll = absl::Milliseconds(20);

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

absl::Duration Remaining(absl::Time deadline) {
  return std::max(deadline - absl::Now(), absl::ZeroDuration());
}

// Forks and execs args[0] with stdin on /dev/null and stdout/stderr on
// out_fd/err_fd. The child is SIGKILLed when the forking thread dies.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, int out_fd, int err_fd) {
  // Everything the child touches is built before fork(): the test process has
  // threads, so only async-signal-safe calls are allowed until exec.
  std::vector<std::string> argv_storage = args;
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    // redis-cli would authenticate with it where a test means not to.
    if (absl::StartsWith(*e, "REDISCLI_AUTH=")) continue;
    env_storage.push_back(*e);
  }
  std::vector<char*> argv;
  for (std::string& s : argv_storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& s : env_storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  long max_fd = sysconf(_SC_OPEN_MAX);
  if (max_fd <= 0 || max_fd > 65536) max_fd = 65536;
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    // A crashed or killed test must not leave servers holding ports.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    // Inherited sockets would outlive the test's own close(), and an
    // inherited pipe end keeps another Cli() from ever seeing EOF.
    if (close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) close(fd);
    }
    // The parent's blocked signals must not leak into the child.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs args to completion, collecting stdout and stderr; killed at the
// deadline so that a hung redis-cli fails the test instead of hanging it.
absl::StatusOr<RunResult> Run(const std::vector<std::string>& args, absl::Duration timeout) {
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    int err = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    return absl::InternalError(absl::StrCat("pipe: ", strerror(err)));
  }
  absl::StatusOr<pid_t> pid = Spawn(args, out_pipe[1], err_pipe[1]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.ok()) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return pid.status();
  }

  RunResult result;
  absl::Time deadline = absl::Now() + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  bool abandoned = false;
  while (open_fds > 0) {
    int64_t ms = absl::ToInt64Milliseconds(Remaining(deadline));
    if (ms <= 0) {
      abandoned = true;
      break;
    }
    int n = poll(fds, 2, static_cast<int>(ms));
    if (n < 0) {
      if (errno == EINTR) continue;
      abandoned = true;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t r = read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, r);
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  if (abandoned) kill(*pid, SIGKILL);
  int status = 0;
  while (waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (abandoned) {
    return absl::DeadlineExceededError(
        absl::StrCat(args[0], " did not finish within ", absl::FormatDuration(timeout),
                     "; stdout: ", result.out, " stderr: ", result.err));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
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

// The URL's userinfo: store URLs are percent-decoded (libs/redis), so a
// password with ':', '@', '/' or '%' must be encoded to come back intact.
std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

// One RESP reply. Integers keep their digits in str.
struct Reply {
  char type = 0;  // '+', '-', ':', '$' or '*'
  bool nil = false;
  std::string str;
  std::vector<Reply> elements;
};

// The harness's own minimal client: polling readiness with redis-cli would
// fork a process per poll per node.
class RespConnection {
 public:
  explicit RespConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      status_ = absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
      return;
    }
    timeval tv = absl::ToTimeval(kIoTimeout);
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      status_ =
          absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", strerror(errno)));
    }
  }
  ~RespConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RespConnection(const RespConnection&) = delete;
  RespConnection& operator=(const RespConnection&) = delete;

  // An error reply becomes an error status carrying its text.
  absl::StatusOr<Reply> Call(const std::vector<std::string>& args) {
    if (!status_.ok()) return status_;
    std::string req = absl::StrCat("*", args.size(), "\r\n");
    for (const std::string& a : args) absl::StrAppend(&req, "$", a.size(), "\r\n", a, "\r\n");
    size_t sent = 0;
    while (sent < req.size()) {
      ssize_t n = send(fd_, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return status_ = absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
      sent += n;
    }
    absl::StatusOr<Reply> reply = ReadReply(0);
    if (!reply.ok()) return status_ = reply.status();
    if (reply->type == '-') return absl::FailedPreconditionError(reply->str);
    return reply;
  }

 private:
  absl::Status Fill() {
    char buf[16384];
    while (true) {
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        buf_.append(buf, n);
        return absl::OkStatus();
      }
      if (n == 0) return absl::UnavailableError("connection closed by redis-server");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return absl::DeadlineExceededError("no reply from redis-server");
      }
      return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    }
  }

  absl::StatusOr<std::string> ReadLine() {
    size_t end;
    while ((end = buf_.find("\r\n")) == std::string::npos) {
      if (absl::Status s = Fill(); !s.ok()) return s;
    }
    std::string line = buf_.substr(0, end);
    buf_.erase(0, end + 2);
    return line;
  }

  absl::StatusOr<Reply> ReadReply(int depth) {
    if (depth > 8) return absl::InternalError("RESP reply nested too deeply");
    absl::StatusOr<std::string> line = ReadLine();
    if (!line.ok()) return line.status();
    if (line->empty()) return absl::InternalError("empty RESP line");
    Reply reply;
    reply.type = (*line)[0];
    std::string rest = line->substr(1);
    int64_t n = 0;
    switch (reply.type) {
      case '+':
      case '-':
      case ':':
        reply.str = rest;
        return reply;
      case '$':
        if (!absl::SimpleAtoi(rest, &n)) return absl::InternalError("bad RESP bulk length");
        if (n < 0) {
          reply.nil = true;
          return reply;
        }
        while (buf_.size() < static_cast<size_t>(n) + 2) {
          if (absl::Status s = Fill(); !s.ok()) return s;
        }
        reply.str = buf_.substr(0, n);
        buf_.erase(0, n + 2);
        return reply;
      case '*':
        if (!absl::SimpleAtoi(rest, &n)) return absl::InternalError("bad RESP array length");
        if (n < 0) {
          reply.nil = true;
          return reply;
        }
        for (int64_t i = 0; i < n; ++i) {
          absl::StatusOr<Reply> element = ReadReply(depth + 1);
          if (!element.ok()) return element.status();
          reply.elements.push_back(*std::move(element));
        }
        return reply;
      default:
        return absl::InternalError(absl::StrCat("unexpected RESP line: ", *line));
    }
  }

  int fd_ = -1;
  std::string buf_;
  absl::Status status_;
};

// One command on a fresh connection, after AUTH when there is a password.
absl::StatusOr<Reply> Query(int port, const std::string& password,
                            const std::vector<std::string>& args) {
  RespConnection conn(port);
  if (!password.empty()) {
    if (absl::StatusOr<Reply> auth = conn.Call({"AUTH", password}); !auth.ok()) {
      return auth.status();
    }
  }
  return conn.Call(args);
}

absl::StatusOr<std::string> QueryText(int port, const std::string& password,
                                      const std::vector<std::string>& args) {
  absl::StatusOr<Reply> reply = Query(port, password, args);
  if (!reply.ok()) return reply.status();
  if (reply->type == '*') {
    return absl::InternalError(absl::StrCat(absl::StrJoin(args, " "), " replied with an array"));
  }
  return reply->str;
}

// "name:value" lines of INFO and CLUSTER INFO.
std::string InfoField(absl::string_view info, absl::string_view name) {
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > name.size() && absl::StartsWith(line, name) && line[name.size()] == ':') {
      return std::string(line.substr(name.size() + 1));
    }
  }
  return "";
}

// The master port for `slot` in the CLUSTER SLOTS view of the node on `port`.
absl::StatusOr<int> SlotMasterPort(int port, const std::string& password, int slot) {
  absl::StatusOr<Reply> slots = Query(port, password, {"CLUSTER", "SLOTS"});
  if (!slots.ok()) return slots.status();
  for (const Reply& range : slots->elements) {
    if (range.elements.size() < 3) continue;
    int start = 0;
    int end = 0;
    if (!absl::SimpleAtoi(range.elements[0].str, &start) ||
        !absl::SimpleAtoi(range.elements[1].str, &end)) {
      return absl::InternalError("bad CLUSTER SLOTS range");
    }
    if (slot < start || slot > end) continue;
    const Reply& master = range.elements[2];
    int master_port = 0;
    if (master.elements.size() < 2 || !absl::SimpleAtoi(master.elements[1].str, &master_port)) {
      return absl::InternalError("bad CLUSTER SLOTS node");
    }
    return master_port;
  }
  return absl::NotFoundError(
      absl::StrCat("slot ", slot, " is not served in the view of 127.0.0.1:", port));
}

absl::StatusOr<std::string> MakeRedisDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "switchboard-redis-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", tmpl, ": ", strerror(errno)));
  }
  return tmpl;
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
