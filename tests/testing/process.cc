#include "tests/testing/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace switchboard::testing {

namespace {

// Starts argv[0] with stdout and stderr into `log_path`; the child's pid, or
// -1 when fork failed.
pid_t SpawnLogged(std::vector<std::string> argv_storage, const std::string& log_path) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  dup2(fd, 1);
  std::vector<char*> argv;
  for (std::string& s : argv_storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  // The parent's blocked signals must not leak into the child.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execv(argv[0], argv.data());
  _exit(127);
}

}  // namespace

namespace {

// The temp dirs this process made: removed at its exit when every test
// passed, kept (logs, databases, AOF files) for a post-mortem otherwise. A
// run leaves up to hundreds of MB per dir, and a machine that runs the suite
// all day would fill its disk.
class TempDirs {
 public:
  void Add(std::string dir) {
    absl::MutexLock lock(&mu_);
    dirs_.push_back(std::move(dir));
  }
  ~TempDirs() {
    if (!::testing::UnitTest::GetInstance()->Passed()) return;
    absl::MutexLock lock(&mu_);
    std::error_code ec;
    for (const std::string& d : dirs_) std::filesystem::remove_all(d, ec);
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> dirs_ ABSL_GUARDED_BY(mu_);
};

TempDirs& Made() {
  static TempDirs dirs;
  return dirs;
}

}  // namespace

std::string MakeTempDir(absl::string_view name) {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / absl::StrCat("switchboard-", name, "-XXXXXX"))
          .string();
  if (mkdtemp(tmpl.data()) == nullptr) return "";
  Made().Add(tmpl);
  return tmpl;
}

bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout,
               absl::Duration poll) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(poll);
  }
}

absl::StatusOr<std::unique_ptr<ServiceProcess>> ServiceProcess::Start(
    const std::string& binary, const std::vector<std::string>& args, absl::Duration timeout,
    bool grpc) {
  std::unique_ptr<ServiceProcess> p(new ServiceProcess());
  std::string dir = MakeTempDir();
  p->log_path_ = dir + "/service.log";
  std::vector<std::string> argv_storage = {binary, "--http_addr=127.0.0.1:0"};
  if (grpc) argv_storage.push_back("--grpc_addr=127.0.0.1:0");
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  pid_t pid = SpawnLogged(argv_storage, p->log_path_);
  if (pid < 0) return absl::InternalError("fork failed");
  p->pid_ = pid;
  static const std::regex kListening(
      "listening (?:grpc=([^ ]+) )?http=([^ \"]+)(?: metrics=([^ \"]+))?");
  bool up = WaitUntil(
      [&] {
        std::smatch m;
        std::string log = p->Log();
        if (std::regex_search(log, m, kListening)) {
          p->grpc_addr_ = m[1];
          p->http_addr_ = m[2];
          p->metrics_addr_ = m[3];
          return true;
        }
        int status;
        return waitpid(p->pid_, &status, WNOHANG) == p->pid_;
      },
      timeout);
  if (!up || p->http_addr_.empty()) {
    std::string log = p->Log();
    p->Kill9();
    return absl::UnavailableError(absl::StrCat(binary, " did not start: ", log));
  }
  return p;
}

ExitResult RunToExit(const std::string& binary, const std::vector<std::string>& args,
                     absl::Duration timeout) {
  std::string log_path = MakeTempDir() + "/output.log";
  std::vector<std::string> argv_storage = {binary};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  pid_t pid = SpawnLogged(argv_storage, log_path);
  if (pid < 0) return {};
  ExitResult result;
  int status = 0;
  bool exited = WaitUntil([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  } else if (WIFEXITED(status)) {
    result.code = WEXITSTATUS(status);
  }
  std::ifstream in(log_path);
  std::stringstream buf;
  buf << in.rdbuf();
  result.output = buf.str();
  return result;
}

ServiceProcess::~ServiceProcess() {
  if (pid_ > 0) Kill9();
}

void ServiceProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

int ServiceProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  bool exited = WaitUntil([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
  if (!exited) {
    Kill9();
    return -1;
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

uint64_t ServiceProcess::RssBytes() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      uint64_t kb = 0;
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb * 1024;
    }
  }
  return 0;
}

std::string ServiceProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double MetricValue(const std::string& http_addr, const std::string& series) {
  std::string metrics = HttpRequest(http_addr, "GET", "/metrics").body;
  size_t at = metrics.find("\n" + series + " ");
  return at == std::string::npos ? 0.0 : std::stod(metrics.substr(at + series.size() + 2));
}

HttpResult HttpRequest(const std::string& host_port, const std::string& method,
                       const std::string& path, const std::string& body,
                       const std::string& extra_headers) {
  HttpResult result;
  std::pair<std::string, std::string> hp = absl::StrSplit(host_port, ':');
  int port = 0;
  if (!absl::SimpleAtoi(hp.second, &port)) return result;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, hp.first.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return result;
  }
  std::string req =
      absl::StrCat(method, " ", path, " HTTP/1.0\r\nHost: ", host_port,
                   "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(), "\r\n",
                   extra_headers, "\r\n", body);
  send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, n);
  close(fd);
  size_t sp = out.find(' ');
  if (sp != std::string::npos) absl::SimpleAtoi(out.substr(sp + 1, 3), &result.status);
  size_t hdr_end = out.find("\r\n\r\n");
  if (hdr_end != std::string::npos) {
    result.head = out.substr(0, hdr_end);
    result.body = out.substr(hdr_end + 4);
  }
  return result;
}

}  // namespace switchboard::testing
