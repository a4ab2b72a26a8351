// libs/redis against real redis-server processes: what a service sees when
// it talks to one server or a Cluster through the client. Replies in order,
// error replies as replies, scripts the server forgot, servers that restart,
// die, refuse a password or block, many threads on one client, and a Cluster
// that routes by slot, moves a slot and fails a master over.
#include "libs/redis/redis_client.h"

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/redis/lua_batch.h"
#include "libs/redis/redis_config.h"
#include "libs/redis/redis_metrics.h"
#include "prometheus/registry.h"
#include "tests/testing/redis_server.h"

namespace switchboard {
namespace {

using redis::Command;
using redis::Reply;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RedisCluster;
using testing::RedisKeySlot;
using testing::RedisOptions;
using testing::RedisServer;

// Generous for a loaded 2-core machine, far below the ctest timeout.
constexpr absl::Duration kCallTimeout = absl::Seconds(10);

absl::Time In(absl::Duration d) { return absl::Now() + d; }

absl::StatusOr<std::unique_ptr<redis::RedisClient>> NewClient(const std::string& url,
                                                              redis::RedisMetrics* metrics) {
  absl::StatusOr<redis::RedisConfig> config = redis::ParseRedisUrl(url, "store");
  if (!config.ok()) return config.status();
  return redis::NewRedisClient(*config, metrics);
}

double Errors(redis::RedisMetrics& metrics, const std::string& kind) {
  return metrics.errors.Add({{"kind", kind}}).Value();
}

// The reply as text for assertions: a mismatch then shows what came back.
std::string Show(const absl::StatusOr<Reply>& reply) {
  if (!reply.ok()) return reply.status().ToString();
  switch (reply->type) {
    case Reply::Type::kNil:
      return "(nil)";
    case Reply::Type::kInteger:
      return absl::StrCat("(integer) ", reply->integer);
    case Reply::Type::kError:
      return absl::StrCat("(error) ", reply->str);
    case Reply::Type::kArray:
      return absl::StrCat("(array of ", reply->elements.size(), ")");
    default:
      return reply->str;
  }
}

// One client with its own metrics, as a service builds it.
class RedisClientTest : public ::testing::Test {
 protected:
  // Replaces the client; metrics carry on.
  void Connect(const std::string& url) {
    absl::StatusOr<std::unique_ptr<redis::RedisClient>> c = NewClient(url, &metrics_);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }
  absl::StatusOr<Reply> Run(absl::string_view slot_key, Command command,
                            absl::Duration timeout = kCallTimeout) {
    return client_->Run(slot_key, std::move(command), In(timeout));
  }
  // Single-key commands: the key picks the slot.
  std::string RunOn(const std::string& key, Command command) {
    return Show(Run(key, std::move(command)));
  }

  prometheus::Registry registry_;
  redis::RedisMetrics metrics_{registry_, "test"};
  std::unique_ptr<redis::RedisClient> client_;
};

class RedisClientStandaloneTest : public RedisClientTest {
 protected:
  void SetUp() override { StartServer({}); }
  void StartServer(RedisOptions options) {
    absl::StatusOr<std::unique_ptr<RedisServer>> s = RedisServer::Start(std::move(options));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    ASSERT_NO_FATAL_FAILURE(Connect(server_->url()));
  }

  std::unique_ptr<RedisServer> server_;
};

TEST_F(RedisClientStandaloneTest, SetThenGetReturnsTheValue) {
  EXPECT_EQ(RunOn("greeting", {"SET", "greeting", "hello world"}), "OK");
  EXPECT_EQ(RunOn("greeting", {"GET", "greeting"}), "hello world");
  EXPECT_EQ(RunOn("missing", {"GET", "missing"}), "(nil)");
  // The value really is on the server, not only in some client cache.
  EXPECT_EQ(server_->Cli({"GET", "greeting"}).value_or("cli failed"), "hello world");
}

TEST_F(RedisClientStandaloneTest, PipelineRepliesComeBackInCommandOrder) {
  constexpr int kCommands = 200;
  std::vector<Command> commands;
  for (int i = 0; i < kCommands; ++i) {
    // Interleaved writes and reads: a reply out of place shows as a wrong
    // type or a wrong number.
    commands.push_back({"INCRBY", "counter", absl::StrCat(i)});
    commands.push_back({"GET", "counter"});
  }
  absl::StatusOr<std::vector<Reply>> replies =
      client_->Pipeline("counter", commands, In(kCallTimeout));
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), commands.size());
  int64_t sum = 0;
  for (int i = 0; i < kCommands; ++i) {
    sum += i;
    EXPECT_EQ(Show((*replies)[2 * i]), absl::StrCat("(integer) ", sum)) << "INCRBY " << i;
    EXPECT_EQ(Show((*replies)[2 * i + 1]), absl::StrCat(sum)) << "GET after INCRBY " << i;
  }
}

TEST_F(RedisClientStandaloneTest, StreamAnswersInOrderWhileCommandsAreInFlight) {
  absl::StatusOr<std::unique_ptr<redis::Stream>> stream =
      client_->OpenStream("k", In(kCallTimeout));
  ASSERT_TRUE(stream.ok()) << stream.status();
  // Three sent before any reply is read, one of them an error reply.
  ASSERT_TRUE((*stream)->Send({"INCRBY", "n", "5"}, In(kCallTimeout)).ok());
  ASSERT_TRUE((*stream)->Send({"INCR", "no-number-here-but", "x"}, In(kCallTimeout)).ok());
  ASSERT_TRUE((*stream)->Send({"INCRBY", "n", "2"}, In(kCallTimeout)).ok());
  EXPECT_EQ(Show((*stream)->Receive(In(kCallTimeout))), "(integer) 5");
  EXPECT_THAT(Show((*stream)->Receive(In(kCallTimeout))), HasSubstr("(error) ERR wrong number"));
  EXPECT_EQ(Show((*stream)->Receive(In(kCallTimeout))), "(integer) 7");
  EXPECT_THAT(Show((*stream)->Receive(In(kCallTimeout))), HasSubstr("FAILED_PRECONDITION"));
}

// NOSCRIPT ends the stream (ABORTED: send it again the retrying way), and the
// replies still on their way must not reach the next user of the connection.
TEST_F(RedisClientStandaloneTest, AStreamEndedWithRepliesUnreadLeavesNoStaleReplies) {
  redis::Script script("return 'ran'");
  client_->Register(script);
  {
    absl::StatusOr<std::unique_ptr<redis::Stream>> stream =
        client_->OpenStream("k", In(kCallTimeout));
    ASSERT_TRUE(stream.ok()) << stream.status();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(
          (*stream)->Send(script.Call({}, std::vector<std::string>{}), In(kCallTimeout)).ok());
    }
    absl::StatusOr<Reply> first = (*stream)->Receive(In(kCallTimeout));
    EXPECT_TRUE(absl::IsAborted(first.status())) << first.status();
    EXPECT_FALSE((*stream)->Send({"PING"}, In(kCallTimeout)).ok());
  }
  // The pool has one connection per free slot; every one must answer its own
  // command (a stale NOSCRIPT reply here would be the stream's).
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Show(Run("k", {"ECHO", absl::StrCat("hello ", i)})), absl::StrCat("hello ", i));
  }
  EXPECT_EQ(Show(Run("k", script.Call({}, std::vector<std::string>{}))), "ran");
}

TEST_F(RedisClientStandaloneTest, ErrorReplyIsAReplyAndDoesNotStopThePipeline) {
  absl::StatusOr<std::vector<Reply>> replies = client_->Pipeline(
      "k", {{"SET", "word", "abc"}, {"INCR", "word"}, {"SET", "after", "1"}, {"INCR", "after"}},
      In(kCallTimeout));
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ(Show((*replies)[0]), "OK");
  EXPECT_TRUE((*replies)[1].is_error()) << Show((*replies)[1]);
  EXPECT_EQ((*replies)[1].error_code(), "ERR");
  EXPECT_THAT((*replies)[1].str, HasSubstr("not an integer"));
  EXPECT_EQ(Show((*replies)[2]), "OK");
  EXPECT_EQ(Show((*replies)[3]), "(integer) 2");
  // The failed INCR changed nothing.
  EXPECT_EQ(RunOn("word", {"GET", "word"}), "abc");
}

TEST_F(RedisClientStandaloneTest, ScriptRunsAgainAfterTheServerForgetsIt) {
  redis::Script add("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  client_->Register(add);
  // The GET after the script shows whether the commands behind a NOSCRIPT
  // were sent again after the script (they ran before it the first time).
  std::vector<Command> commands = {add.Call({"total"}, {"5"}), {"GET", "total"}};
  absl::StatusOr<std::vector<Reply>> first = client_->Pipeline("total", commands, In(kCallTimeout));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ(Show((*first)[0]), "(integer) 5");
  EXPECT_EQ(Show((*first)[1]), "5");

  ASSERT_EQ(server_->Cli({"SCRIPT", "FLUSH"}).value_or("cli failed"), "OK");
  ASSERT_EQ(server_->Cli({"SCRIPT", "EXISTS", add.sha1()}).value_or("cli failed"), "0");
  double noscript_before = Errors(metrics_, "noscript");

  absl::StatusOr<std::vector<Reply>> second =
      client_->Pipeline("total", commands, In(kCallTimeout));
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->size(), 2u);
  EXPECT_EQ(Show((*second)[0]), "(integer) 10");
  EXPECT_EQ(Show((*second)[1]), "10");
  EXPECT_GT(Errors(metrics_, "noscript"), noscript_before);
  EXPECT_EQ(server_->Cli({"SCRIPT", "EXISTS", add.sha1()}).value_or("cli failed"), "1");
}

// Calls of one command the server counted since CONFIG RESETSTAT.
int64_t CommandCalls(RedisServer& server, const std::string& command) {
  std::string info = server.Cli({"INFO", "commandstats"}).value_or("");
  std::string tag = absl::StrCat("cmdstat_", command, ":calls=");
  size_t at = info.find(tag);
  if (at == std::string::npos) return 0;
  int64_t calls = 0;
  for (size_t i = at + tag.size(); i < info.size() && absl::ascii_isdigit(info[i]); ++i) {
    calls = calls * 10 + (info[i] - '0');
  }
  return calls;
}

// The stores' scripts queue index writes with kLuaBatch: what they leave
// behind must be what the same commands one by one would have left, sent as
// one command per key and kind.
TEST_F(RedisClientStandaloneTest, LuaBatchWritesAsCommandsOneByOneWouldWithFewerCalls) {
  redis::Script script(absl::StrCat(redis::kLuaBatch, R"lua(
later('ZADD', KEYS[1], 1, 'a')
later('ZADD', KEYS[1], 2, 'b')
later('ZREM', KEYS[1], 'a')
later('ZADD', KEYS[1], 3, 'a')
later('ZADD XX GT', KEYS[1], 1, 'b')
later('ZADD XX GT', KEYS[1], 5, 'b')
later('ZADD XX GT', KEYS[1], 9, 'never')
later('ZADD', KEYS[2], 1, 'x')
later('ZREM', KEYS[2], 'x')
for i = 1, 4500 do later('SADD', KEYS[3], 'm' .. i) end
add_later(KEYS[4], 'f', 2)
add_later(KEYS[4], 'f', -1)
add_later(KEYS[4], 'g', 1)
add_later(KEYS[4], 'g', -1)
expire_later(KEYS[1], 60000)
expire_later(KEYS[5], 60000)
local before = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
flush()
flush()
return before
)lua"));
  client_->Register(script);
  ASSERT_EQ(server_->Cli({"SET", "{b}e", "kept"}).value_or("cli failed"), "OK");
  ASSERT_EQ(server_->Cli({"CONFIG", "RESETSTAT"}).value_or("cli failed"), "OK");
  EXPECT_EQ(RunOn("{b}z", script.Call({"{b}z", "{b}gone", "{b}s", "{b}h", "{b}e"}, {})),
            "(integer) 0")
      << "nothing is written before flush()";

  // Per key, the order the script queued them in.
  EXPECT_EQ(server_->Cli({"ZRANGE", "{b}z", "0", "-1", "WITHSCORES"}).value_or("cli failed"),
            "a\n3\nb\n5");
  EXPECT_EQ(server_->Cli({"EXISTS", "{b}gone"}).value_or("cli failed"), "0");
  EXPECT_EQ(server_->Cli({"SCARD", "{b}s"}).value_or("cli failed"), "4500");
  EXPECT_EQ(server_->Cli({"HGETALL", "{b}h"}).value_or("cli failed"), "f\n1")
      << "increments summed per field; one that sums to 0 is not sent";
  int64_t ttl = 0;
  ASSERT_TRUE(absl::SimpleAtoi(server_->Cli({"PTTL", "{b}z"}).value_or(""), &ttl));
  EXPECT_GT(ttl, 50000);
  ASSERT_TRUE(absl::SimpleAtoi(server_->Cli({"PTTL", "{b}e"}).value_or(""), &ttl));
  EXPECT_GT(ttl, 50000) << "an expiry alone is sent too";

  // {b}z: ZADD (a, b), ZREM a, ZADD a, ZADD XX GT (three members); {b}gone:
  // ZADD, ZREM; 4500 SADDs in slices of 2000.
  EXPECT_EQ(CommandCalls(*server_, "zadd"), 4);
  EXPECT_EQ(CommandCalls(*server_, "zrem"), 2);
  EXPECT_EQ(CommandCalls(*server_, "sadd"), 3);
  EXPECT_EQ(CommandCalls(*server_, "hincrby"), 1);
  EXPECT_EQ(CommandCalls(*server_, "pexpire"), 2);
}

TEST_F(RedisClientStandaloneTest, NextCallAfterServerRestartSucceeds) {
  // Leaves a pooled connection behind that the restart makes stale.
  ASSERT_EQ(RunOn("k", {"SET", "k", "before"}), "OK");
  double reconnects_before = metrics_.reconnects.Value();

  server_->Kill9();
  absl::Status restarted = server_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << server_->Log();

  EXPECT_EQ(RunOn("k", {"SET", "k", "after"}), "OK");
  EXPECT_EQ(RunOn("k", {"GET", "k"}), "after");
  EXPECT_GT(metrics_.reconnects.Value(), reconnects_before);
}

// More than a socket's largest send buffer (tcp_wmem max, 4 MiB by default)
// cannot leave before the restarted server's reset reaches the stale
// connection: the next write fails with EPIPE, which must be an error to
// retry, not a SIGPIPE that kills the process.
TEST_F(RedisClientStandaloneTest, BigPipelineAfterServerRestartSucceeds) {
  ASSERT_EQ(RunOn("k", {"SET", "k", "before"}), "OK");
  server_->Kill9();
  absl::Status restarted = server_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << server_->Log();

  constexpr int kCommands = 5000;
  const std::string value(1024, 'x');
  std::vector<Command> commands;
  for (int i = 0; i < kCommands; ++i) commands.push_back({"SET", absl::StrCat("big:", i), value});
  absl::StatusOr<std::vector<Reply>> replies = client_->Pipeline("k", commands, In(kCallTimeout));
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), commands.size());
  for (int i = 0; i < kCommands; ++i) ASSERT_EQ(Show((*replies)[i]), "OK") << i;
  EXPECT_EQ(server_->Cli({"DBSIZE"}).value_or("cli failed"), absl::StrCat(kCommands + 1));
}

TEST_F(RedisClientStandaloneTest, FailsFastWithUnavailableWhenTheServerIsDown) {
  ASSERT_EQ(RunOn("k", {"SET", "k", "v"}), "OK");
  server_->Kill9();

  // Both with the stale pooled connection and with none left.
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::Time start = absl::Now();
    absl::StatusOr<Reply> r = Run("k", {"GET", "k"}, absl::Seconds(5));
    absl::Duration took = absl::Now() - start;
    EXPECT_TRUE(absl::IsUnavailable(r.status())) << attempt << ": " << Show(r);
    EXPECT_LT(took, absl::Seconds(1)) << attempt;
  }
}

TEST_F(RedisClientStandaloneTest, CommandBlockedPastItsDeadlineIsCutAndTheClientRecovers) {
  ASSERT_EQ(RunOn("k", {"PING"}), "PONG");
  absl::Time start = absl::Now();
  absl::StatusOr<Reply> blocked = Run("queue", {"BLPOP", "queue", "5"}, absl::Milliseconds(300));
  absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsDeadlineExceeded(blocked.status())) << Show(blocked);
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(1));

  EXPECT_EQ(RunOn("k", {"SET", "k", "v"}), "OK");
  EXPECT_EQ(RunOn("k", {"GET", "k"}), "v");
}

TEST_F(RedisClientStandaloneTest, ConcurrentIncrementsFromManyThreadsAllCount) {
  constexpr int kThreads = 8;
  constexpr int kIncrements = 500;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      // One caller's INCRs follow each other, so the values it sees rise;
      // a reply handed to the wrong caller breaks that.
      int64_t last = 0;
      for (int i = 0; i < kIncrements; ++i) {
        absl::StatusOr<Reply> r = Run("hits", {"INCR", "hits"});
        if (!r.ok() || r->type != Reply::Type::kInteger || r->integer <= last) ++failures;
        if (r.ok()) last = r->integer;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(RunOn("hits", {"GET", "hits"}), absl::StrCat(kThreads * kIncrements));
  // The pool bounds the connections however many callers there are.
  EXPECT_LE(metrics_.connects.Value(), redis::RedisConfig().max_connections_per_node);
}

class RedisClientAuthTest : public RedisClientStandaloneTest {
 protected:
  void SetUp() override {
    RedisOptions options;
    options.password = "right-pw";
    StartServer(std::move(options));
  }
};

TEST_F(RedisClientAuthTest, RightPasswordWorks) {
  EXPECT_EQ(RunOn("k", {"SET", "k", "v"}), "OK");
  EXPECT_EQ(RunOn("k", {"GET", "k"}), "v");
}

TEST_F(RedisClientAuthTest, WrongPasswordIsUnauthenticatedWithoutEchoingIt) {
  ASSERT_NO_FATAL_FAILURE(Connect(absl::StrCat("redis://:not-the-pw@", server_->addr())));
  absl::StatusOr<Reply> r = Run("k", {"GET", "k"});
  EXPECT_TRUE(absl::IsUnauthenticated(r.status())) << Show(r);
  EXPECT_THAT(r.status().message(), Not(HasSubstr("not-the-pw")));
  EXPECT_THAT(r.status().message(), HasSubstr(server_->addr()));
}

TEST_F(RedisClientAuthTest, AclUserWithPasswordWorks) {
  ASSERT_EQ(
      server_->Cli({"ACL", "SETUSER", "app", "on", ">apppw", "~*", "+@all"}).value_or("cli failed"),
      "OK");
  ASSERT_NO_FATAL_FAILURE(Connect(absl::StrCat("redis://app:apppw@", server_->addr())));
  EXPECT_EQ(RunOn("k", {"SET", "k", "v"}), "OK");
  // Authenticated as the ACL user, not as the default one.
  EXPECT_EQ(RunOn("k", {"ACL", "WHOAMI"}), "app");

  ASSERT_NO_FATAL_FAILURE(Connect(absl::StrCat("redis://app:wrong@", server_->addr())));
  EXPECT_TRUE(absl::IsUnauthenticated(Run("k", {"GET", "k"}).status()));
}

class RedisClientClusterTest : public RedisClientTest {
 protected:
  void StartCluster(int masters, int replicas) {
    absl::StatusOr<std::unique_ptr<RedisCluster>> c = RedisCluster::Start(masters, replicas);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = *std::move(c);
  }
  size_t MasterOfKey(const std::string& key) {
    absl::StatusOr<size_t> m = cluster_->MasterOf(RedisKeySlot(key));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.value_or(0);
  }

  // The first steps of resharding in the Redis Cluster specification: node
  // `to` imports the slot of `key` from node `from`, and `keys` move over.
  void StartMigration(const std::string& key, size_t from, size_t to,
                      const std::vector<std::string>& keys) {
    slot_ = absl::StrCat(RedisKeySlot(key));
    from_ = from;
    to_ = to;
    absl::StatusOr<std::string> from_id = cluster_->node(from)->Cli({"CLUSTER", "MYID"});
    absl::StatusOr<std::string> to_id = cluster_->node(to)->Cli({"CLUSTER", "MYID"});
    ASSERT_TRUE(from_id.ok()) << from_id.status();
    ASSERT_TRUE(to_id.ok()) << to_id.status();
    from_id_ = *from_id;
    to_id_ = *to_id;
    ASSERT_EQ(cluster_->node(to)
                  ->Cli({"CLUSTER", "SETSLOT", slot_, "IMPORTING", from_id_})
                  .value_or("cli failed"),
              "OK");
    ASSERT_EQ(cluster_->node(from)
                  ->Cli({"CLUSTER", "SETSLOT", slot_, "MIGRATING", to_id_})
                  .value_or("cli failed"),
              "OK");
    for (const std::string& k : keys) ASSERT_NO_FATAL_FAILURE(Migrate(k));
  }
  void Migrate(const std::string& key) {
    absl::StatusOr<std::string> migrated = cluster_->node(from_)->Cli(
        {"MIGRATE", "127.0.0.1", absl::StrCat(cluster_->node(to_)->port()), key, "0", "5000"});
    ASSERT_TRUE(migrated.ok()) << migrated.status();
    ASSERT_EQ(*migrated, "OK") << key;
  }
  // Moves the keys left in the slot, then hands the slot over on every
  // master (the target first, so that it never bounces the client back).
  void FinishMigration() {
    absl::StatusOr<std::string> left =
        cluster_->node(from_)->Cli({"CLUSTER", "GETKEYSINSLOT", slot_, "1000"});
    ASSERT_TRUE(left.ok()) << left.status();
    for (absl::string_view k : absl::StrSplit(*left, '\n', absl::SkipEmpty())) {
      ASSERT_NO_FATAL_FAILURE(Migrate(std::string(k)));
    }
    // The tests migrate in a 3+0 cluster: nodes 0, 1 and 2 are the masters.
    for (size_t node : {to_, from_, 3 - to_ - from_}) {
      ASSERT_EQ(cluster_->node(node)
                    ->Cli({"CLUSTER", "SETSLOT", slot_, "NODE", to_id_})
                    .value_or("cli failed"),
                "OK")
          << "node " << node;
    }
  }

  std::unique_ptr<RedisCluster> cluster_;
  std::string slot_;
  size_t from_ = 0;
  size_t to_ = 0;
  std::string from_id_;
  std::string to_id_;
};

TEST_F(RedisClientClusterTest, OneSeedRoutesKeysToEveryMaster) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, 0));
  ASSERT_NO_FATAL_FAILURE(Connect(absl::StrCat("redis-cluster://", cluster_->node(0)->addr())));

  std::map<size_t, std::string> key_on_master;
  for (int i = 0; key_on_master.size() < 3 && i < 1000; ++i) {
    std::string key = absl::StrCat("route:", i);
    key_on_master.emplace(MasterOfKey(key), key);
  }
  ASSERT_EQ(key_on_master.size(), 3u);

  for (const auto& [master, key] : key_on_master) {
    EXPECT_EQ(RunOn(key, {"SET", key, "on-" + key}), "OK") << key;
    EXPECT_EQ(RunOn(key, {"GET", key}), "on-" + key) << key;
    // Without -c redis-cli would get MOVED from any other node.
    EXPECT_EQ(cluster_->node(master)->Cli({"GET", key}).value_or("cli failed"), "on-" + key)
        << key << " should live on node " << master;
  }

  // Keys sharing a hash tag share a slot, so one pipeline may span them.
  absl::StatusOr<std::vector<Reply>> replies =
      client_->Pipeline("{user7}",
                        {{"SET", "{user7}:name", "ada"},
                         {"INCR", "{user7}:visits"},
                         {"INCRBY", "{user7}:visits", "5"},
                         {"MGET", "{user7}:name", "{user7}:visits"}},
                        In(kCallTimeout));
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ(Show((*replies)[0]), "OK");
  EXPECT_EQ(Show((*replies)[1]), "(integer) 1");
  EXPECT_EQ(Show((*replies)[2]), "(integer) 6");
  ASSERT_EQ((*replies)[3].elements.size(), 2u) << Show((*replies)[3]);
  EXPECT_EQ((*replies)[3].elements[0].str, "ada");
  EXPECT_EQ((*replies)[3].elements[1].str, "6");

  EXPECT_GT(metrics_.topology_refreshes.Value(), 0);
  // Sent where the slot map says from the start, not found by following
  // MOVED from the seed.
  EXPECT_EQ(Errors(metrics_, "redirect"), 0);
}

TEST_F(RedisClientClusterTest, FollowsMovedAfterASlotMigratesToAnotherMaster) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, 0));
  ASSERT_NO_FATAL_FAILURE(Connect(cluster_->url()));
  const std::string key = "migrating-key";
  ASSERT_EQ(RunOn(key, {"SET", key, "v1"}), "OK");  // caches the slot map

  size_t from = MasterOfKey(key);
  size_t to = (from + 1) % 3;
  ASSERT_NO_FATAL_FAILURE(StartMigration(key, from, to, {key}));
  ASSERT_NO_FATAL_FAILURE(FinishMigration());
  ASSERT_EQ(MasterOfKey(key), to);

  double redirects_before = Errors(metrics_, "redirect");
  EXPECT_EQ(RunOn(key, {"GET", key}), "v1");
  EXPECT_EQ(RunOn(key, {"SET", key, "v2"}), "OK");
  EXPECT_EQ(cluster_->node(to)->Cli({"GET", key}).value_or("cli failed"), "v2");
  EXPECT_GT(Errors(metrics_, "redirect"), redirects_before);
}

TEST_F(RedisClientClusterTest, FollowsAskWhileASlotIsHalfMigrated) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, 0));
  ASSERT_NO_FATAL_FAILURE(Connect(cluster_->url()));
  const std::string moved = "{mig}:moved";
  const std::string stays = "{mig}:stays";
  ASSERT_EQ(RunOn(moved, {"SET", moved, "m"}), "OK");
  ASSERT_EQ(RunOn(stays, {"SET", stays, "s"}), "OK");

  size_t from = MasterOfKey(moved);
  size_t to = (from + 1) % 3;
  ASSERT_NO_FATAL_FAILURE(StartMigration(moved, from, to, {moved}));

  double redirects_before = Errors(metrics_, "redirect");
  // The source still answers for `stays` and sends the client with ASK to
  // the target for `moved`: the reply before the ASK must stand.
  absl::StatusOr<std::vector<Reply>> replies =
      client_->Pipeline("{mig}", {{"GET", stays}, {"GET", moved}}, In(kCallTimeout));
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 2u);
  EXPECT_EQ(Show((*replies)[0]), "s");
  EXPECT_EQ(Show((*replies)[1]), "m");
  // ASK is for one request: the slot still belongs to the source, so taking
  // it for a MOVED would cost another redirect (the target answers MOVED).
  EXPECT_EQ(RunOn(stays, {"GET", stays}), "s");
  EXPECT_EQ(Errors(metrics_, "redirect") - redirects_before, 1);

  // A new key of a migrating slot is created on the target.
  const std::string created = "{mig}:created";
  EXPECT_EQ(RunOn(created, {"SET", created, "c"}), "OK");
  EXPECT_EQ(cluster_->node(from)
                ->Cli({"CLUSTER", "GETKEYSINSLOT", absl::StrCat(RedisKeySlot(stays)), "10"})
                .value_or("cli failed"),
            stays);
  ASSERT_NO_FATAL_FAILURE(FinishMigration());
  EXPECT_EQ(cluster_->node(to)->Cli({"GET", created}).value_or("cli failed"), "c");
}

TEST_F(RedisClientClusterTest, WritesSucceedAcrossAMasterFailover) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(3, 1));
  ASSERT_NO_FATAL_FAILURE(Connect(cluster_->url()));
  const int slot = RedisKeySlot("{switchboard}");
  auto key = [](int i) { return absl::StrCat("{switchboard}:k", i); };
  auto value = [](int i) { return absl::StrCat("v", i); };

  constexpr int kBefore = 10;
  constexpr int kAfter = 30;
  for (int i = 0; i < kBefore; ++i) ASSERT_EQ(RunOn(key(i), {"SET", key(i), value(i)}), "OK");
  // Replication is asynchronous: without this, kill -9 may lose writes that
  // the old master acknowledged, which would not be the client's fault.
  ASSERT_EQ(RunOn("{switchboard}", {"WAIT", "1", "5000"}), "(integer) 1");

  absl::StatusOr<size_t> old_master = cluster_->MasterOf(slot);
  ASSERT_TRUE(old_master.ok()) << old_master.status();
  cluster_->node(*old_master)->Kill9();
  double troubles_before = Errors(metrics_, "io") + Errors(metrics_, "retry");

  // The first of these can only succeed on the promoted replica: the client
  // must ride out the failover on its own, within each call's deadline.
  for (int i = kBefore; i < kBefore + kAfter; ++i) {
    absl::Time start = absl::Now();
    absl::StatusOr<Reply> r = Run(key(i), {"SET", key(i), value(i)}, absl::Seconds(10));
    ASSERT_TRUE(r.ok() && !r->is_error())
        << key(i) << ": " << Show(r) << " after " << absl::Now() - start;
  }
  absl::StatusOr<size_t> new_master =
      cluster_->WaitForNewMaster(slot, *old_master, absl::Seconds(30));
  ASSERT_TRUE(new_master.ok()) << new_master.status();
  EXPECT_NE(*new_master, *old_master);
  EXPECT_GT(Errors(metrics_, "io") + Errors(metrics_, "retry"), troubles_before);

  for (int i = 0; i < kBefore + kAfter; ++i) {
    EXPECT_EQ(RunOn(key(i), {"GET", key(i)}), value(i)) << key(i);
  }
  EXPECT_EQ(cluster_->node(*new_master)->Cli({"GET", key(kBefore)}).value_or("cli failed"),
            value(kBefore));
}

}  // namespace
}  // namespace switchboard
