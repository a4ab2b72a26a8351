// Internal helpers shared by redis_server.cc and redis_cluster.cc: process
// spawning, the harness's own RESP client and the harness's constants. Not
// part of the test-facing API (that is redis_server.h).
#ifndef SWITCHBOARD_TESTS_TESTING_REDIS_SUPPORT_H_
#define SWITCHBOARD_TESTS_TESTING_REDIS_SUPPORT_H_

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace switchboard::testing::redis_internal {

inline constexpr char kRedisServerBin[] = "/usr/bin/redis-server";
inline constexpr char kRedisCliBin[] = "/usr/bin/redis-cli";
inline constexpr char kHost[] = "127.0.0.1";
// A cluster node also listens on port + 10000 (the cluster bus).
inline constexpr int kClusterBusOffset = 10000;
inline constexpr int kMaxClusterPort = 65535 - kClusterBusOffset;
inline constexpr int kPortAttempts = 20;
inline constexpr int kSlots = 16384;
inline constexpr absl::Duration kStartTimeout = absl::Seconds(20);
inline constexpr absl::Duration kCliTimeout = absl::Seconds(30);
inline constexpr absl::Duration kClusterTimeout = absl::Seconds(60);
// Per read or write on the harness's own connections: a live server answers
// PING and INFO at once, a stopped one must not stall a WaitUntil poll.
inline constexpr absl::Duration kIoTimeout = absl::Seconds(2);
inline constexpr absl::Duration kPoll = absl::Milliseconds(20);

absl::Duration Remaining(absl::Time deadline);

// Forks and execs args[0] with stdin on /dev/null and stdout/stderr on
// out_fd/err_fd. The child is SIGKILLed when the forking thread dies.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, int out_fd, int err_fd);

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs args to completion, collecting stdout and stderr; killed at the
// deadline so that a hung redis-cli fails the test instead of hanging it.
absl::StatusOr<RunResult> Run(const std::vector<std::string>& args, absl::Duration timeout);

// The URL's userinfo: store URLs are percent-decoded (libs/redis), so a
// password with ':', '@', '/' or '%' must be encoded to come back intact.
std::string PercentEncode(std::string_view s);

// One RESP reply. Integers keep their digits in str.
struct Reply {
  char type = 0;  // '+', '-', ':', '$' or '*'
  bool nil = false;
  std::string str;
  std::vector<Reply> elements;
};

// One command on a fresh connection, after AUTH when there is a password.
// An error reply becomes an error status carrying its text.
absl::StatusOr<Reply> Query(int port, const std::string& password,
                            const std::vector<std::string>& args);

// Query for a reply that is not an array; its text.
absl::StatusOr<std::string> QueryText(int port, const std::string& password,
                                      const std::vector<std::string>& args);

// "name:value" lines of INFO and CLUSTER INFO.
std::string InfoField(absl::string_view info, absl::string_view name);

// The master port for `slot` in the CLUSTER SLOTS view of the node on `port`.
absl::StatusOr<int> SlotMasterPort(int port, const std::string& password, int slot);

}  // namespace switchboard::testing::redis_internal

#endif  // SWITCHBOARD_TESTS_TESTING_REDIS_SUPPORT_H_
