#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_EVENT_STORE_CONFORMANCE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_EVENT_STORE_CONFORMANCE_H_

// The EventStore contract, run against every implementation: the embedded
// SQLite store, the Redis store on a real standalone redis-server and on a
// real 3-master Redis Cluster (started once per suite on loopback ports), and
// MemoryEventStore, the in-memory fake of a shared store for unit tests
// (every Open() of a test is a store over that test's one MemoryStoreState,
// like replicas sharing one Redis).
#include <algorithm>
//
// The fixture and helpers; the cases are in event_store_conformance_test.cc
// (log, dedupe, history, retention, embedded group state) and
// event_store_shared_conformance_test.cc (what replicas share).
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/redis/redis_metrics.h"
#include "prometheus/registry.h"
#include "services/event_broker/redis_store.h"
#include "services/event_broker/sqlite_store.h"
#include "services/event_broker/test_util.h"
#include "services/event_broker/testing/memory_store.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/store_backends.h"

namespace switchboard::broker::conformance {

inline const absl::Time kNow = absl::FromUnixSeconds(1700000000);

using testing::Backend;
using testing::BackendName;

inline testing::BackendServers* servers = nullptr;

class EventStoreConformance : public ::testing::TestWithParam<Backend> {
 public:
  static void SetUpTestSuite() { servers = new testing::BackendServers; }
  static void TearDownTestSuite() {
    delete servers;
    servers = nullptr;
  }

 protected:
  // Starts only the server this test needs (CTest runs each test in its own
  // process; a run of the whole binary shares them).
  void SetUp() override {
    static int n = 0;
    prefix_ = absl::StrCat("conf", ++n, "-", getpid());
    servers->Ensure(GetParam());
  }

  // A store over this test's data; a second call is the same data seen by a
  // restarted process (or by another replica, for Redis and Memory).
  std::unique_ptr<EventStore> Open() {
    if (GetParam() == Backend::kMemory) {
      return std::make_unique<MemoryEventStore>(memory_, dedupe_.window);
    }
    if (GetParam() == Backend::kSqlite) {
      absl::StatusOr<std::unique_ptr<SqliteEventStore>> s =
          SqliteEventStore::Open(dir_.path(), SyncPolicy::kNormal, dedupe_);
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? *std::move(s) : nullptr;
    }
    RedisStoreOptions opts;
    opts.prefix = prefix_;
    opts.dedupe_window = dedupe_.window;
    return std::make_unique<RedisEventStore>(
        redis::NewRedisClient(servers->Config(GetParam()), &servers->metrics), opts);
  }

  bool shared_by_processes() const { return GetParam() != Backend::kSqlite; }

  TempDir dir_;
  std::string prefix_;
  std::shared_ptr<MemoryStoreState> memory_ = MemoryEventStore::NewState();
  DedupeOptions dedupe_;
};

// Commits `evs` (failing the test if the store refuses).
inline absl::StatusOr<CommitResult> CommitEvents(EventStore& store,
                                                 const std::vector<events::v1::Event>& evs,
                                                 absl::Time now = kNow) {
  WriteBatch batch;
  std::vector<NewEvent> prepared;
  for (const auto& e : evs) prepared.push_back(ToNewEvent(e));
  for (auto& e : prepared) batch.events.push_back(&e);
  absl::StatusOr<CommitResult> r = store.Commit(batch, now);
  EXPECT_TRUE(r.ok()) << r.status();
  return r;
}

// The first sequence `evs` got.
inline uint64_t Append(EventStore& store, std::vector<events::v1::Event> evs,
                       absl::Time now = kNow) {
  absl::StatusOr<CommitResult> r = CommitEvents(store, evs, now);
  return r.ok() ? r->first : 0;
}

inline events::v1::Event WithSubject(events::v1::Event e, std::string s) {
  e.set_subject(std::move(s));
  return e;
}

inline events::v1::Event WithTime(events::v1::Event e, absl::Time t) {
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(t));
  return e;
}

inline GroupOp Op(GroupOp::Kind kind, const std::string& group, uint64_t seq = 0,
                  uint32_t attempts = 0) {
  GroupOp op{kind};
  op.group.name = group;
  op.seq = seq;
  op.attempts = attempts;
  return op;
}

inline absl::Status CommitOps(EventStore& store, std::vector<GroupOp> ops) {
  WriteBatch batch;
  batch.ops = std::move(ops);
  return store.Commit(batch, kNow).status();
}

}  // namespace switchboard::broker::conformance

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_EVENT_STORE_CONFORMANCE_H_
