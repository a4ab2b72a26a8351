#include "tests/testing/redis_support.h"

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
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

extern char** environ;

namespace switchboard::testing::redis_internal {
namespace {

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

}  // namespace

absl::Duration Remaining(absl::Time deadline) {
  return std::max(deadline - absl::Now(), absl::ZeroDuration());
}

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

std::string InfoField(absl::string_view info, absl::string_view name) {
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > name.size() && absl::StartsWith(line, name) && line[name.size()] == ':') {
      return std::string(line.substr(name.size() + 1));
    }
  }
  return "";
}

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

}  // namespace switchboard::testing::redis_internal
