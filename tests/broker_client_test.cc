// The shared broker client against the real broker, across a kill -9 and a
// restart on the same port: publishes retry and stay idempotent, group
// subscriptions reconnect and resume. BatchPublisher against a fake client:
// retries of asynchronous events in order, errors for synchronous ones, the
// bounded queue and the last attempt at destruction.
#include "libs/broker_client/broker_client.h"

#include <atomic>
#include <climits>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "libs/broker_client/batching.h"
#include "libs/broker_client/null_broker_client.h"
#include "tests/testing/process.h"
#include "tests/testing/redis_server.h"

namespace switchboard {
namespace {

using testing::ServiceProcess;
using testing::WaitUntil;

events::v1::Event OrderEvent(const std::string& type) {
  events::v1::Event ev;
  ev.set_type(type);
  ev.set_source("client-test");
  return ev;
}

// On the embedded store (false) and on Redis (true): a restart of the broker
// on the same data is a restart on the same Redis key prefix.
class BrokerClientIT : public ::testing::TestWithParam<bool> {
 protected:
  static void TearDownTestSuite() { redis_.reset(); }
  void SetUp() override {
    if (GetParam() && !redis_) {
      auto r = testing::RedisServer::Start();
      ASSERT_TRUE(r.ok()) << r.status();
      redis_ = *std::move(r);
    }
  }
  void StartBroker(const std::string& grpc_addr = "127.0.0.1:0") {
    std::vector<std::string> args = {"--data_dir=" + data_dir_, "--grpc_addr=" + grpc_addr};
    if (GetParam()) {
      args.push_back("--store=" + redis_->url());
      args.push_back("--redis_prefix=client" + std::to_string(std::hash<std::string>()(data_dir_)));
    }
    auto p = ServiceProcess::Start(BROKER_BIN, args);
    ASSERT_TRUE(p.ok()) << p.status();
    broker_ = *std::move(p);
  }
  std::string data_dir_ = testing::MakeTempDir();
  std::unique_ptr<ServiceProcess> broker_;
  static inline std::unique_ptr<testing::RedisServer> redis_;
};

TEST_P(BrokerClientIT, PublishRetriesThroughARestartAndStaysIdempotent) {
  StartBroker();
  std::string addr = broker_->grpc_addr();
  auto client = NewGrpcBrokerClient({addr});
  auto first = client->Publish(OrderEvent("order.created"), absl::Seconds(5));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->sequence(), 1u);

  broker_->Kill9();
  absl::StatusOr<broker::v1::PublishResponse> during;
  std::thread publisher(
      [&] { during = client->Publish(OrderEvent("order.completed"), absl::Seconds(30)); });
  StartBroker(addr);  // same port
  publisher.join();
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(during->sequence(), 2u);

  // A retry with the same id is answered from the dedupe window.
  events::v1::Event again = OrderEvent("order.completed");
  again.set_id(during->id());
  auto dup = client->Publish(again, absl::Seconds(5));
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->duplicate());
  EXPECT_EQ(dup->sequence(), 2u);

  // Bad input is not retried.
  auto bad = client->Publish(OrderEvent("Bad"), absl::Seconds(5));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(BrokerClientIT, GroupSubscriptionReconnectsAndResumes) {
  StartBroker();
  std::string addr = broker_->grpc_addr();
  auto client = NewGrpcBrokerClient({addr, absl::Milliseconds(20), absl::Milliseconds(200)});
  absl::Mutex mu;
  std::vector<broker::v1::Delivery> got;
  broker::v1::SubscribeRequest req;
  req.set_group("client-group");
  req.add_types("order.*");
  req.set_start(broker::v1::SubscribeRequest::EARLIEST);
  // On Redis the killed broker's lease on event 2 must run out first.
  req.mutable_ack_deadline()->set_seconds(3);
  auto sub = client->SubscribeGroup(req, [&](const broker::v1::Delivery& d) {
    // Ack all but the event with sequence 2, which stays pending.
    if (d.event().sequence() != 2) {
      ASSERT_TRUE(client->Ack("client-group", {d.ack_id()}, absl::Seconds(5)).ok());
    }
    absl::MutexLock lock(&mu);
    got.push_back(d);
  });
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(client->Publish(OrderEvent("order.created"), absl::Seconds(5)).ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        absl::MutexLock l(&mu);
        return got.size() >= 3;
      },
      absl::Seconds(10)));

  broker_->Kill9();
  size_t at_kill;
  {
    absl::MutexLock l(&mu);
    at_kill = got.size();
  }
  StartBroker(addr);
  ASSERT_TRUE(client->Publish(OrderEvent("order.paid"), absl::Seconds(10)).ok());
  // After the restart: the pending event 2 comes again, then the new one.
  ASSERT_TRUE(WaitUntil(
      [&] {
        absl::MutexLock l(&mu);
        std::set<uint64_t> after;
        for (size_t i = at_kill; i < got.size(); ++i) after.insert(got[i].event().sequence());
        return after.count(2) && after.count(4);
      },
      absl::Seconds(30)));
  {
    absl::MutexLock l(&mu);
    for (size_t i = at_kill; i < got.size(); ++i) {
      if (got[i].event().sequence() == 2) {
        EXPECT_GE(got[i].delivery_attempt(), 2u);
      }
    }
  }
  EXPECT_TRUE(sub->connected());
  sub->Stop();
}

// Publishes fail as told (the first fail_first calls, and the calls numbered
// in fail_calls, 1-based); while blocked, a call waits for Release().
class FakePublishClient : public NullBrokerClient {
 public:
  absl::StatusOr<broker::v1::PublishBatchResponse> PublishBatch(std::vector<events::v1::Event> evs,
                                                                absl::Duration) override {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> subjects, ids;
    for (const auto& e : evs) {
      subjects.push_back(e.subject());
      ids.push_back(e.id());
    }
    calls_.push_back(subjects);
    call_ids_.push_back(ids);
    int n = static_cast<int>(calls_.size());
    auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !blocked_; };
    mu_.Await(absl::Condition(&released));
    if (n <= fail_first_ || fail_calls_.count(n)) return error_;
    for (const auto& e : evs) {
      if (!refused_subject_.empty() && e.subject() == refused_subject_) {
        return absl::InvalidArgumentError(absl::StrCat("events: '", e.subject(), "' is bad"));
      }
    }
    for (const auto& e : evs) published_.push_back(e.subject());
    return broker::v1::PublishBatchResponse();
  }

  void FailFirst(int n, absl::Status error = absl::UnavailableError("broker down")) {
    absl::MutexLock lock(&mu_);
    fail_first_ = n;
    error_ = error;
  }
  void FailCall(int n) {
    absl::MutexLock lock(&mu_);
    fail_calls_.insert(n);
  }
  // Every batch holding an event with this subject is refused for good.
  void RefuseSubject(std::string subject) {
    absl::MutexLock lock(&mu_);
    refused_subject_ = std::move(subject);
  }
  void Block() {
    absl::MutexLock lock(&mu_);
    blocked_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    blocked_ = false;
  }
  // Wait (with a deadline) until at least n calls were made / n events published.
  bool WaitForCalls(size_t n, absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto c = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&c), timeout);
  }
  bool WaitForPublished(size_t n, absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto c = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return published_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&c), timeout);
  }
  std::vector<std::vector<std::string>> calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  std::vector<std::vector<std::string>> call_ids() const {
    absl::MutexLock lock(&mu_);
    return call_ids_;
  }
  std::vector<std::string> published() const {
    absl::MutexLock lock(&mu_);
    return published_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<std::string>> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> published_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> call_ids_ ABSL_GUARDED_BY(mu_);
  int fail_first_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<int> fail_calls_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_) = absl::UnavailableError("broker down");
  bool blocked_ ABSL_GUARDED_BY(mu_) = false;
  std::string refused_subject_ ABSL_GUARDED_BY(mu_);
};

// Declared after the publisher: releases the fake before the publisher's
// destructor waits for its thread, also when an ASSERT left the test early.
struct ReleaseOnExit {
  FakePublishClient* broker;
  ~ReleaseOnExit() { broker->Release(); }
};

using Subjects = std::vector<std::string>;
using Calls = std::vector<std::vector<std::string>>;

// An event without an id, told apart by its subject.
events::v1::Event Subject(const std::string& subject) {
  events::v1::Event ev = OrderEvent("job.started");
  ev.set_subject(subject);
  return ev;
}

std::vector<std::string> Names(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(absl::StrCat(prefix, i));
  return out;
}

INSTANTIATE_TEST_SUITE_P(Stores, BrokerClientIT, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Redis" : "Embedded";
                         });

TEST(BatchPublisherTest, AsyncEventsAreRetriedAndPublishedInSubmissionOrder) {
  FakePublishClient broker;
  broker.FailFirst(3);
  auto publisher = std::make_unique<BatchPublisher>(&broker, /*max_batch=*/4, absl::Seconds(1),
                                                    /*max_queued=*/1000, absl::Milliseconds(1),
                                                    absl::Milliseconds(5));
  std::vector<std::string> want = Names("a", 20);
  for (size_t i = 0; i < want.size(); ++i) {
    if (i % 3 == 0 && i + 1 < want.size()) {  // some submissions hold two events
      publisher->PublishAsync({Subject(want[i]), Subject(want[i + 1])});
      ++i;
    } else {
      publisher->PublishAsync({Subject(want[i])});
    }
  }
  ASSERT_TRUE(broker.WaitForPublished(want.size())) << broker.calls().size() << " calls";
  EXPECT_EQ(broker.published(), want) << "every event once, in submission order";
  std::vector<std::vector<std::string>> calls = broker.calls();
  ASSERT_GE(calls.size(), 4u);
  // The failed calls retried the same head of the queue.
  EXPECT_EQ(calls[0][0], "a0");
  EXPECT_EQ(calls[1][0], "a0");
  EXPECT_EQ(calls[2][0], "a0");
  EXPECT_EQ(calls[3][0], "a0");
  // Ids were set once, before the first try: the broker's dedupe window
  // recognises a retry.
  std::map<std::string, std::string> id_of;
  std::vector<std::vector<std::string>> ids = broker.call_ids();
  for (size_t c = 0; c < calls.size(); ++c) {
    for (size_t i = 0; i < calls[c].size(); ++i) {
      EXPECT_TRUE(absl::StartsWith(ids[c][i], "evt_")) << ids[c][i];
      auto [it, inserted] = id_of.emplace(calls[c][i], ids[c][i]);
      EXPECT_EQ(it->second, ids[c][i]) << calls[c][i] << " changed its id";
    }
  }
  EXPECT_TRUE(WaitUntil([&] { return publisher->pending_events() == 0; }, absl::Seconds(10)));
  EXPECT_EQ(publisher->dropped_events(), 0u);
}

TEST(BatchPublisherTest, SyncPublishInAFailedBatchGetsTheErrorWhileAsyncEventsAreRetried) {
  FakePublishClient broker;
  broker.Block();
  broker.FailCall(2);
  BatchPublisher publisher(&broker, 1000, absl::Seconds(1), 1000, absl::Milliseconds(1),
                           absl::Milliseconds(5));
  ReleaseOnExit release{&broker};
  publisher.PublishAsync({Subject("e0")});
  // e0 is in flight (held by the fake); the next three go in one batch.
  ASSERT_TRUE(broker.WaitForCalls(1));
  publisher.PublishAsync({Subject("a1")});
  absl::Status sync_status;
  std::thread sync([&] { sync_status = publisher.Publish({Subject("s1")}); });
  // (EXPECT, not ASSERT, while a thread runs: it is joined either way.)
  EXPECT_TRUE(WaitUntil([&] { return publisher.pending_events() == 3; }, absl::Seconds(10)));
  publisher.PublishAsync({Subject("a2")});
  broker.Release();
  sync.join();
  EXPECT_EQ(sync_status.code(), absl::StatusCode::kUnavailable) << sync_status;
  ASSERT_TRUE(broker.WaitForPublished(3));
  EXPECT_EQ(broker.calls(), (Calls{{"e0"}, {"a1", "s1", "a2"}, {"a1", "a2"}}));
  EXPECT_EQ(broker.published(), (Subjects{"e0", "a1", "a2"}));
  // A synchronous publish after the failure goes through.
  EXPECT_TRUE(publisher.Publish({Subject("s2")}).ok());
  EXPECT_EQ(broker.published(), (Subjects{"e0", "a1", "a2", "s2"}));
}

TEST(BatchPublisherTest, FullQueueBlocksPublishersUntilThereIsRoom) {
  FakePublishClient broker;
  broker.Block();
  BatchPublisher publisher(&broker, 1000, absl::Seconds(60), /*max_queued=*/2);
  ReleaseOnExit release{&broker};
  publisher.PublishAsync({Subject("e1")});
  ASSERT_TRUE(broker.WaitForCalls(1));
  publisher.PublishAsync({Subject("e2")});  // e1 in flight + e2 queued: full
  std::atomic<bool> async_returned{false};
  std::thread async([&] {
    publisher.PublishAsync({Subject("e3")});
    async_returned.store(true);
  });
  EXPECT_TRUE(WaitUntil([&] { return publisher.blocked_callers() == 1; }, absl::Seconds(10)));
  EXPECT_FALSE(async_returned.load()) << "PublishAsync returned with the queue full";
  EXPECT_EQ(publisher.pending_events(), 2u);
  broker.Release();
  EXPECT_TRUE(WaitUntil([&] { return async_returned.load(); }, absl::Seconds(10)));
  async.join();
  ASSERT_TRUE(broker.WaitForPublished(3));
  EXPECT_EQ(broker.published(), (Subjects{"e1", "e2", "e3"}));

  // A synchronous publish waits for room the same way.
  broker.Block();
  size_t calls_before = broker.calls().size();
  publisher.PublishAsync({Subject("e4")});
  ASSERT_TRUE(broker.WaitForCalls(calls_before + 1));
  publisher.PublishAsync({Subject("e5")});
  absl::Status sync_status = absl::UnknownError("not returned");
  std::atomic<bool> sync_returned{false};
  std::thread sync([&] {
    sync_status = publisher.Publish({Subject("s6")});
    sync_returned.store(true);
  });
  EXPECT_TRUE(WaitUntil([&] { return publisher.blocked_callers() == 1; }, absl::Seconds(10)));
  EXPECT_FALSE(sync_returned.load()) << "Publish did not wait for room";
  broker.Release();
  sync.join();
  EXPECT_TRUE(sync_status.ok()) << sync_status;
  EXPECT_EQ(broker.published(), (Subjects{"e1", "e2", "e3", "e4", "e5", "s6"}));
}

TEST(BatchPublisherTest, DestructionCutsTheBackoffShortMakesOneLastAttemptAndLogsTheDrops) {
  FakePublishClient broker;
  broker.FailFirst(INT_MAX);
  auto publisher = std::make_unique<BatchPublisher>(&broker, 1000, absl::Seconds(1), 1000,
                                                    absl::Hours(1), absl::Hours(1));
  publisher->PublishAsync({Subject("a1")});
  // The first try failed: a1 waits out its (hour-long) backoff.
  ASSERT_TRUE(broker.WaitForCalls(1));
  publisher->PublishAsync({Subject("a2"), Subject("a3")});
  ::testing::internal::CaptureStderr();
  absl::Time start = absl::Now();
  publisher.reset();
  absl::Duration took = absl::Now() - start;
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_LT(took, absl::Seconds(10)) << "the backoff held up destruction";
  EXPECT_EQ(broker.calls(), (Calls{{"a1"}, {"a1", "a2", "a3"}}))
      << "one last attempt with everything queued, in order";
  EXPECT_TRUE(broker.published().empty());
  EXPECT_TRUE(absl::StrContains(log, "\"level\":\"error\"")) << log;
  EXPECT_TRUE(absl::StrContains(log, "dropped")) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"events\":3")) << log;
}

TEST(BatchPublisherTest, EventsTheBrokerRefusesAreDroppedNotRetriedForever) {
  FakePublishClient broker;
  broker.FailFirst(1, absl::InvalidArgumentError("events[0].type: bad"));
  BatchPublisher publisher(&broker, 1000, absl::Seconds(1), 1000, absl::Milliseconds(1),
                           absl::Milliseconds(5));
  publisher.PublishAsync({Subject("bad")});
  ASSERT_TRUE(broker.WaitForCalls(1));
  publisher.PublishAsync({Subject("good")});
  ASSERT_TRUE(broker.WaitForPublished(1));
  EXPECT_EQ(broker.published(), (Subjects{"good"}));
  EXPECT_EQ(broker.calls().size(), 2u);
  EXPECT_TRUE(WaitUntil([&] { return publisher.dropped_events() == 1; }, absl::Seconds(10)));
}

// Review finding: one bad event refused for good must not drop the other
// submissions that shared its batch: they are sent again, each alone.
TEST(BatchPublisherTest, ARefusedEventDoesNotTakeItsBatchmatesDown) {
  FakePublishClient broker;
  broker.RefuseSubject("bad");
  BatchPublisher publisher(&broker, 1000, absl::Seconds(5), 1000, absl::Milliseconds(1),
                           absl::Milliseconds(5));
  broker.Block();
  publisher.PublishAsync({Subject("first")});  // in flight, blocked
  ASSERT_TRUE(broker.WaitForCalls(1));
  publisher.PublishAsync({Subject("good-1")});
  publisher.PublishAsync({Subject("bad")});
  absl::Status sync_status;
  absl::Notification sync_done;
  std::thread sync([&] {
    sync_status = publisher.Publish({Subject("good-2")});
    sync_done.Notify();
  });
  ASSERT_TRUE(WaitUntil([&] { return publisher.pending_events() == 4; }, absl::Seconds(10)));
  broker.Release();  // the second batch holds good-1, bad and good-2
  ASSERT_TRUE(sync_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  sync.join();
  EXPECT_TRUE(sync_status.ok()) << sync_status;
  ASSERT_TRUE(broker.WaitForPublished(3));
  EXPECT_EQ(broker.published(), (Subjects{"first", "good-1", "good-2"}));
  EXPECT_TRUE(WaitUntil([&] { return publisher.dropped_events() == 1; }, absl::Seconds(10)));
}

// The job worker finishes many jobs at once: each job's events are
// published whole, in one batch with the others, and a refused event fails
// only its own job.
TEST(BatchPublisherTest, PublishEachAnswersEverySubmissionOnItsOwn) {
  FakePublishClient broker;
  broker.RefuseSubject("bad");
  BatchPublisher publisher(&broker, 1000, absl::Seconds(5), 1000, absl::Milliseconds(1),
                           absl::Milliseconds(5));
  auto encode = [](std::vector<events::v1::Event> events) {
    EncodedEvents out;
    for (auto& e : events) out.Add(std::move(e));
    return out;
  };
  std::vector<EncodedEvents> each;
  each.push_back(encode({Subject("j1-a"), Subject("j1-b")}));
  each.push_back(encode({Subject("bad")}));
  each.push_back(encode({Subject("j3")}));
  std::vector<absl::Status> got = publisher.PublishEach(std::move(each));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0].ok()) << got[0];
  EXPECT_EQ(got[1].code(), absl::StatusCode::kInvalidArgument) << got[1];
  EXPECT_TRUE(got[2].ok()) << got[2];
  EXPECT_EQ(broker.published(), (Subjects{"j1-a", "j1-b", "j3"}));
  // One call for all three, then each again alone after the refusal.
  EXPECT_EQ(broker.calls(),
            (Calls{{"j1-a", "j1-b", "bad", "j3"}, {"j1-a", "j1-b"}, {"bad"}, {"j3"}}));
  EXPECT_TRUE(publisher.PublishEach({}).empty());
}

// Many large submissions are split by bytes too, whole submissions per call:
// a 500-job round of big job.completed events stays under the broker's
// message limit instead of being refused (and retried) whole.
TEST(BatchPublisherTest, BatchesAreCutByBytesAsWellAsByEvents) {
  FakePublishClient broker;
  BatchPublisher publisher(&broker, 1000, absl::Seconds(5), 1000, absl::Milliseconds(1),
                           absl::Milliseconds(5), /*max_batch_bytes=*/1000);
  auto big = [](const std::string& name) {
    events::v1::Event ev = Subject(name);
    ev.set_correlation_id(std::string(300, 'c'));
    EncodedEvents out;
    out.Add(std::move(ev));
    return out;
  };
  std::vector<EncodedEvents> each;
  for (const std::string& name : {"b0", "b1", "b2", "b3", "b4"}) each.push_back(big(name));
  ASSERT_LT(each[0].wire().size(), 500u);
  ASSERT_GT(each[0].wire().size() * 3, 1000u);
  std::vector<absl::Status> got = publisher.PublishEach(std::move(each));
  for (const absl::Status& s : got) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(broker.calls(), (Calls{{"b0", "b1"}, {"b2", "b3"}, {"b4"}}));
}

// A broker that takes nothing does not hold callers forever: waiting for
// room is bounded by the publish timeout (review finding: a worker's shutdown
// could hang behind it).
TEST(BatchPublisherTest, WaitingForRoomEndsAtThePublishTimeout) {
  FakePublishClient broker;
  broker.Block();
  BatchPublisher publisher(&broker, 1000, absl::Milliseconds(300), /*max_queued=*/1);
  ReleaseOnExit release{&broker};
  publisher.PublishAsync({Subject("e1")});  // in flight, blocked: the queue is full
  ASSERT_TRUE(broker.WaitForCalls(1));
  absl::Status s = publisher.Publish({Subject("e2")});
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  publisher.PublishAsync({Subject("e3")});
  EXPECT_EQ(publisher.dropped_events(), 1u);
}

}  // namespace
}  // namespace switchboard
