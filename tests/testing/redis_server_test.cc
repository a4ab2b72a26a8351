// The redis-server harness against real servers: a standalone server keeps
// its data across kill -9 only through its AOF, a password server refuses
// unauthenticated clients, key slots match Redis's own, and a 3+3 cluster
// fails a killed master over to its replica.
#include "tests/testing/redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace switchboard::testing {
namespace {

struct ShellResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// For clients the harness deliberately does not offer (no password).
ShellResult RunShell(const std::string& command) {
  ShellResult result;
  FILE* f = popen(absl::StrCat("env -u REDISCLI_AUTH ", command, " 2>&1").c_str(), "r");
  if (f == nullptr) return result;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) result.output.append(buf, n);
  int status = pclose(f);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The first reply line to an inline command, without redis-cli in between;
// empty when the connection fails.
std::string RawCommand(int port, const std::string& inline_command) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string req = inline_command + "\r\n";
    send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    char c;
    while (recv(fd, &c, 1, 0) == 1 && c != '\n') reply += c;
    if (!reply.empty() && reply.back() == '\r') reply.pop_back();
  }
  close(fd);
  return reply;
}

TEST(RedisServerTest, StartsAndStoresValues) {
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start();
  ASSERT_TRUE(started.ok()) << started.status();
  RedisServer& redis = **started;
  EXPECT_TRUE(redis.running());
  EXPECT_GT(redis.pid(), 0);
  EXPECT_GT(redis.port(), 0);
  EXPECT_EQ(redis.addr(), absl::StrCat("127.0.0.1:", redis.port()));
  EXPECT_EQ(redis.url(), absl::StrCat("redis://127.0.0.1:", redis.port()));

  EXPECT_EQ(redis.Cli({"SET", "greeting", "hello world"}).value_or("error"), "OK");
  EXPECT_EQ(redis.Cli({"GET", "greeting"}).value_or("error"), "hello world");
  // redis-cli prints nil as an empty line.
  EXPECT_EQ(redis.Cli({"GET", "missing"}).value_or("error"), "");
  EXPECT_EQ(redis.Cli({"CONFIG", "GET", "appendonly"}).value_or("error"), "appendonly\nyes");
  // The empty value is a trailing empty line, trimmed away.
  EXPECT_EQ(redis.Cli({"CONFIG", "GET", "save"}).value_or("error"), "save");

  // Error replies are errors, not text that looks like a value.
  absl::StatusOr<std::string> incr = redis.Cli({"INCR", "greeting"});
  ASSERT_FALSE(incr.ok());
  EXPECT_TRUE(absl::StrContains(incr.status().message(), "not an integer")) << incr.status();
  EXPECT_TRUE(absl::StrContains(redis.Log(), "Ready to accept connections")) << redis.Log();
}

TEST(RedisServerTest, DestructorKillsAndReaps) {
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start();
  ASSERT_TRUE(started.ok()) << started.status();
  pid_t pid = (*started)->pid();
  int port = (*started)->port();
  ASSERT_EQ(RawCommand(port, "PING"), "+PONG");
  started->reset();
  // Reaped: no zombie left to wait for.
  errno = 0;
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_EQ(RawCommand(port, "PING"), "");
}

TEST(RedisServerTest, Kill9AndRestartKeepDataWithAppendfsyncAlways) {
  RedisOptions options;
  options.appendfsync = "always";
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisServer& redis = **started;
  int port = redis.port();
  pid_t first_pid = redis.pid();
  ASSERT_EQ(redis.Cli({"CONFIG", "GET", "appendfsync"}).value_or("error"), "appendfsync\nalways");
  ASSERT_EQ(redis.Cli({"SET", "order:1", "paid"}).value_or("error"), "OK");
  ASSERT_EQ(redis.Cli({"RPUSH", "events", "a", "b", "c"}).value_or("error"), "3");

  redis.Kill9();
  EXPECT_FALSE(redis.running());
  EXPECT_EQ(redis.pid(), -1);
  EXPECT_FALSE(redis.Cli({"PING"}).ok());

  absl::Time before = absl::Now();
  absl::Status restarted = redis.Restart();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << redis.Log();
  EXPECT_LT(absl::Now() - before, absl::Seconds(20));
  EXPECT_TRUE(redis.running());
  EXPECT_NE(redis.pid(), first_pid);
  EXPECT_EQ(redis.port(), port);
  EXPECT_EQ(redis.Cli({"GET", "order:1"}).value_or("error"), "paid") << redis.Log();
  EXPECT_EQ(redis.Cli({"LRANGE", "events", "0", "-1"}).value_or("error"), "a\nb\nc");
}

// The counterpart that shows the AOF, not something else, carries the data.
TEST(RedisServerTest, Kill9LosesDataWithoutAppendonly) {
  RedisOptions options;
  options.appendonly = false;
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisServer& redis = **started;
  ASSERT_EQ(redis.Cli({"SET", "order:1", "paid"}).value_or("error"), "OK");
  redis.Kill9();
  absl::Status restarted = redis.Restart();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << redis.Log();
  EXPECT_EQ(redis.Cli({"EXISTS", "order:1"}).value_or("error"), "0");
}

TEST(RedisServerTest, PasswordServerRefusesUnauthenticatedClients) {
  RedisOptions options;
  options.password = "s3cret";
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisServer& redis = **started;
  EXPECT_EQ(redis.url(), absl::StrCat("redis://:s3cret@127.0.0.1:", redis.port()));

  EXPECT_EQ(redis.Cli({"SET", "k", "v"}).value_or("error"), "OK");
  EXPECT_EQ(redis.Cli({"GET", "k"}).value_or("error"), "v");

  EXPECT_EQ(RawCommand(redis.port(), "GET k"), "-NOAUTH Authentication required.");
  EXPECT_EQ(RawCommand(redis.port(), "AUTH s3cret"), "+OK");
  std::string cli = absl::StrCat("/usr/bin/redis-cli -h 127.0.0.1 -p ", redis.port());
  // Plain redis-cli prints the error reply and still exits 0: that is why
  // Cli() passes -e.
  ShellResult plain = RunShell(absl::StrCat(cli, " GET k"));
  EXPECT_EQ(plain.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(plain.output, "NOAUTH")) << plain.output;
  ShellResult with_e = RunShell(absl::StrCat(cli, " -e GET k"));
  EXPECT_EQ(with_e.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(with_e.output, "NOAUTH")) << with_e.output;
  ShellResult wrong = RunShell(absl::StrCat(cli, " -a wrong --no-auth-warning -e GET k"));
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(wrong.output, "WRONGPASS")) << wrong.output;
}

// Quoted in the config file, percent-encoded in the URL.
TEST(RedisServerTest, PasswordWithSpecialCharacters) {
  RedisOptions options;
  options.password = "p@ss:w/o rd%\"x";
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisServer& redis = **started;
  EXPECT_EQ(redis.url(),
            absl::StrCat("redis://:p%40ss%3Aw%2Fo%20rd%25%22x@127.0.0.1:", redis.port()));
  EXPECT_EQ(redis.Cli({"CONFIG", "GET", "requirepass"}).value_or("error"),
            "requirepass\np@ss:w/o rd%\"x");
}

TEST(RedisServerTest, BadConfigFailsFastWithTheLog) {
  RedisOptions options;
  options.extra_config = {"no-such-directive yes"};
  absl::Time before = absl::Now();
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(options);
  ASSERT_FALSE(started.ok());
  EXPECT_LT(absl::Now() - before, absl::Seconds(5));
  EXPECT_TRUE(absl::StrContains(started.status().message(), "no-such-directive"))
      << started.status();
}

TEST(RedisServerTest, RejectsUnknownAppendfsync) {
  RedisOptions options;
  options.appendfsync = "sometimes";
  absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start(options);
  EXPECT_EQ(started.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RedisKeySlotTest, KnownValues) {
  EXPECT_EQ(RedisKeySlot("foo"), 12182);
  EXPECT_EQ(RedisKeySlot("bar"), 5061);
  EXPECT_EQ(RedisKeySlot("123456789"), 12739);  // the CRC16/XMODEM check value 0x31C3
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("{user1000}.followers"));
  EXPECT_EQ(RedisKeySlot("{user1000}.following"), RedisKeySlot("user1000"));
  // An empty tag does not count: the whole key is hashed.
  EXPECT_NE(RedisKeySlot("{}foo"), RedisKeySlot(""));
  EXPECT_EQ(RedisKeySlot(""), 0);
}

TEST(RedisClusterTest, FailsOverAKilledMasterToItsReplica) {
  absl::Time before = absl::Now();
  absl::StatusOr<std::unique_ptr<RedisCluster>> started = RedisCluster::Start(3, 1);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisCluster& cluster = **started;
  std::cout << "3+3 cluster ready in " << absl::FormatDuration(absl::Now() - before) << "\n";
  ASSERT_EQ(cluster.size(), 6u);

  std::string url = "redis-cluster://";
  for (size_t i = 0; i < cluster.size(); ++i) {
    RedisServer* node = cluster.node(i);
    EXPECT_LE(node->port(), 55535);
    absl::StrAppend(&url, i == 0 ? "" : ",", node->addr());
    absl::StatusOr<std::string> info = node->Cli({"CLUSTER", "INFO"});
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_TRUE(absl::StrContains(*info, "cluster_state:ok")) << *info;
  }
  EXPECT_EQ(cluster.url(), url);

  // Our slots must be the server's, or a test would look at the wrong master.
  for (const char* key : {"foo", "{switchboard}", "{switchboard}:stream:orders", "a{b}c{d}", "{}x",
                          "{x", "x}{y}", "deployment:42"}) {
    EXPECT_EQ(cluster.node(0)->Cli({"CLUSTER", "KEYSLOT", key}).value_or("error"),
              absl::StrCat(RedisKeySlot(key)))
        << key;
  }

  int slot = RedisKeySlot("{switchboard}");
  absl::StatusOr<size_t> old_master = cluster.MasterOf(slot);
  ASSERT_TRUE(old_master.ok()) << old_master.status();
  RedisServer* master = cluster.node(*old_master);
  EXPECT_TRUE(absl::StrContains(master->Cli({"INFO", "replication"}).value_or(""), "role:master"));
  std::set<size_t> replicas;
  for (size_t i = 0; i < cluster.size(); ++i) {
    std::string repl = cluster.node(i)->Cli({"INFO", "replication"}).value_or("");
    if (absl::StrContains(repl, absl::StrCat("master_port:", master->port(), "\r"))) {
      replicas.insert(i);
    }
  }
  ASSERT_EQ(replicas.size(), 1u);

  ASSERT_EQ(master->Cli({"SET", "{switchboard}:before", "1"}).value_or("error"), "OK");
  // Acknowledged by the replica, so the failover cannot lose it.
  ASSERT_EQ(master->Cli({"WAIT", "1", "5000"}).value_or("error"), "1");

  master->Kill9();
  absl::Time killed = absl::Now();
  absl::StatusOr<size_t> new_master =
      cluster.WaitForNewMaster(slot, *old_master, absl::Seconds(30));
  ASSERT_TRUE(new_master.ok()) << new_master.status() << "\n"
                               << cluster.node(*replicas.begin())->Log();
  std::cout << "failover took " << absl::FormatDuration(absl::Now() - killed) << "\n";
  EXPECT_NE(*new_master, *old_master);
  EXPECT_EQ(*new_master, *replicas.begin());
  EXPECT_TRUE(absl::StrContains(
      cluster.node(*new_master)->Cli({"INFO", "replication"}).value_or(""), "role:master"));
  EXPECT_EQ(cluster.MasterOf(slot).value_or(99), *new_master);

  // Through a node that does not own the slot, so -c has to follow MOVED.
  size_t survivor = 0;
  while (survivor == *new_master || survivor == *old_master) ++survivor;
  RedisServer* client = cluster.node(survivor);
  EXPECT_EQ(client->Cli({"-c", "SET", "{switchboard}:after", "2"}).value_or("error"), "OK");
  EXPECT_EQ(client->Cli({"-c", "GET", "{switchboard}:after"}).value_or("error"), "2");
  // The new master has the write its replica acknowledged. (Read there
  // directly and through the survivor, whose view of the slot's owner
  // follows the failover through gossip: on a loaded machine a moment
  // after the other nodes'.)
  EXPECT_EQ(cluster.node(*new_master)->Cli({"GET", "{switchboard}:before"}).value_or("error"), "1");
  std::string read_before;
  EXPECT_TRUE(WaitUntil(
      [&] {
        read_before = client->Cli({"-c", "GET", "{switchboard}:before"}).value_or("error");
        return read_before == "1";
      },
      absl::Seconds(10), absl::Milliseconds(50)))
      << "read through node " << survivor << ": '" << read_before << "'";
  EXPECT_EQ(cluster.node(*new_master)->Cli({"GET", "{switchboard}:after"}).value_or("error"), "2");

  // Back on its port with its nodes.conf, the old master rejoins as a replica.
  absl::Status restarted = master->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << master->Log();
  EXPECT_TRUE(WaitUntil(
      [&] {
        std::string repl = master->Cli({"INFO", "replication"}).value_or("");
        return absl::StrContains(repl, "role:slave") &&
               absl::StrContains(repl, "master_link_status:up");
      },
      absl::Seconds(30)))
      << master->Log();
  EXPECT_EQ(cluster.MasterOf(slot).value_or(99), *new_master);
}

// Without replicas there is nobody to promote: the wait must time out, not
// report the dead master or a guess.
TEST(RedisClusterTest, WaitForNewMasterTimesOutWithoutReplicas) {
  absl::StatusOr<std::unique_ptr<RedisCluster>> started = RedisCluster::Start(3, 0);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisCluster& cluster = **started;
  int slot = RedisKeySlot("{switchboard}");
  absl::StatusOr<size_t> old_master = cluster.MasterOf(slot);
  ASSERT_TRUE(old_master.ok()) << old_master.status();
  cluster.node(*old_master)->Kill9();
  absl::StatusOr<size_t> new_master = cluster.WaitForNewMaster(slot, *old_master, absl::Seconds(3));
  EXPECT_EQ(new_master.status().code(), absl::StatusCode::kDeadlineExceeded) << new_master.status();
}

TEST(RedisClusterTest, PasswordClusterReplicatesAndServes) {
  RedisOptions options;
  options.password = "s3cret";
  absl::StatusOr<std::unique_ptr<RedisCluster>> started = RedisCluster::Start(3, 1, options);
  ASSERT_TRUE(started.ok()) << started.status();
  RedisCluster& cluster = **started;
  EXPECT_TRUE(absl::StartsWith(cluster.url(), "redis-cluster://:s3cret@127.0.0.1:"))
      << cluster.url();
  EXPECT_EQ(RawCommand(cluster.node(0)->port(), "CLUSTER INFO"),
            "-NOAUTH Authentication required.");
  for (size_t i = 0; i < cluster.size(); ++i) {
    EXPECT_EQ(cluster.node(i)->Cli({"-c", "SET", absl::StrCat("key", i), "v"}).value_or("error"),
              "OK");
  }
  EXPECT_EQ(cluster.node(0)->Cli({"-c", "GET", "key5"}).value_or("error"), "v");
}

TEST(RedisClusterTest, RejectsTooFewMasters) {
  absl::StatusOr<std::unique_ptr<RedisCluster>> started = RedisCluster::Start(2, 1);
  EXPECT_EQ(started.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchboard::testing
