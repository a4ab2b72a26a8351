// Publishes committed on the publisher's own thread (Broker::CommitInline)
// over the real SQLite store: when it happens, when it must not, and that
// inline and queued commits keep one order.
#include <sqlite3.h>

#include <filesystem>
#include <set>
#include <thread>

#include "libs/common/sqlite_util.h"
#include "services/event_broker/broker_test_fixture.h"

namespace switchboard::broker {
namespace {

using test_support::CollectingSink;

class BrokerInlineTest : public ::testing::Test {
 protected:
  void Open(SyncPolicy sync = SyncPolicy::kNormal) {
    broker_.reset();
    metrics_ = std::make_unique<BrokerMetrics>(registry_);
    // No checkpoint by the clock: one that copied the whole WAL sends the
    // next publish to the writer (the WAL starts over, with an fsync).
    sqlite::WalCheckpointer::Options checkpoints;
    checkpoints.interval = absl::Hours(1);
    auto store = SqliteEventStore::Open(dir_.path(), sync, {}, checkpoints);
    ASSERT_TRUE(store.ok()) << store.status();
    config_.run_housekeeping = false;
    auto b = Broker::Create(config_, *std::move(store), &clock_, metrics_.get());
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
  }

  struct Answer {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<std::vector<PublishResult>> result ABSL_GUARDED_BY(mu);
    std::thread::id thread ABSL_GUARDED_BY(mu);
  };
  // Publishes one at a time, each answered before the next: what a lone
  // client does, after which lone publishes are committed inline.
  void PublishAlone(int n) {
    for (int i = 0; i < n; ++i) {
      auto r = broker_->PublishAndWait({MakeEvent("order.created")});
      ASSERT_TRUE(r.ok()) << r.status();
      // A publisher is answered before the commit's bookkeeping ends; a
      // client over the network arrives later than that.
      broker_->FlushWrites();
    }
  }
  // A broadcast subscription to every order event.
  static v1::SubscribeRequest Everything(v1::SubscribeRequest::StartPosition start) {
    v1::SubscribeRequest req;
    req.set_start(start);
    req.add_types("order.*");
    return req;
  }
  // Publish, noting where and with what it was answered.
  void PublishInto(events::v1::Event ev, Answer* answer) {
    broker_->Publish({std::move(ev)}, [answer](absl::StatusOr<std::vector<PublishResult>> r) {
      absl::MutexLock lock(&answer->mu);
      answer->result = std::move(r);
      answer->thread = std::this_thread::get_id();
      answer->done = true;
    });
  }

  TempDir dir_;
  FakeClock clock_;
  prometheus::Registry registry_;
  std::unique_ptr<BrokerMetrics> metrics_;
  BrokerConfig config_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerInlineTest, ALonePublishIsCommittedAndAnsweredOnItsOwnThread) {
  Open();
  // The first ones are the writer's: publishers might be arriving together.
  PublishAlone(8);
  EXPECT_EQ(metrics_->inline_commits.Value(), 0);
  CollectingSink sink;
  auto sub = broker_->Subscribe(Everything(v1::SubscribeRequest::EARLIEST), &sink);
  ASSERT_TRUE(sub.ok()) << sub.status();
  sink.Attach(*sub);

  Answer answer;
  PublishInto(MakeEvent("order.created", "evt_1"), &answer);
  {
    absl::MutexLock lock(&answer.mu);
    ASSERT_TRUE(answer.done) << "answered before Publish returned";
    EXPECT_EQ(answer.thread, std::this_thread::get_id());
    ASSERT_TRUE(answer.result.ok()) << answer.result.status();
    EXPECT_EQ(answer.result->front().sequence, 9u);
  }
  EXPECT_EQ(metrics_->inline_commits.Value(), 1);
  auto got = sink.WaitFor(9);
  ASSERT_EQ(got.size(), 9u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].event->seq, i + 1);
  sink.Close();
  sub->reset();
  // Durable like any other commit: there after a restart, and still in the
  // dedupe window.
  Open();
  EXPECT_EQ(broker_->GetStats()->total_events(), 9u);
  auto again = broker_->PublishAndWait({MakeEvent("order.created", "evt_1")});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->front().duplicate);
  EXPECT_EQ(again->front().sequence, 9u);
}

TEST_F(BrokerInlineTest, ALockedDatabaseSendsThePublishToTheWriterWithoutBlockingTheCaller) {
  Open();
  PublishAlone(8);
  // Another connection's write transaction. The store's process lock keeps
  // other processes out, so it is a connection of this one.
  sqlite3* other = nullptr;
  std::string path = (std::filesystem::path(dir_.path()) / "events.db").string();
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &other, SQLITE_OPEN_READWRITE, sqlite::kVfs), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  Answer answer;
  absl::Time t0 = absl::Now();
  PublishInto(MakeEvent("order.created"), &answer);
  // The writer thread waits for the lock (up to its busy timeout of 5 s);
  // the caller, an RPC's thread, must not.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  {
    absl::MutexLock lock(&answer.mu);
    EXPECT_FALSE(answer.done);
  }
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  absl::MutexLock lock(&answer.mu);
  ASSERT_TRUE(answer.mu.AwaitWithTimeout(absl::Condition(&answer.done), absl::Seconds(10)));
  ASSERT_TRUE(answer.result.ok()) << answer.result.status();
  EXPECT_EQ(answer.result->front().sequence, 9u);
  EXPECT_NE(answer.thread, std::this_thread::get_id());
  EXPECT_EQ(metrics_->inline_commits.Value(), 0);
  // The database free again, the next lone publish is committed inline.
  PublishAlone(1);
  EXPECT_EQ(metrics_->inline_commits.Value(), 1);
}

TEST_F(BrokerInlineTest, PublishersArrivingTogetherAreLeftToTheWritersBatches) {
  Open();
  PublishAlone(8);
  PublishAlone(1);
  ASSERT_EQ(metrics_->inline_commits.Value(), 1);
  // Three publishes at once: the first finds the database locked (so the
  // writer holds it), the others queue behind it.
  sqlite3* other = nullptr;
  std::string path = (std::filesystem::path(dir_.path()) / "events.db").string();
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &other, SQLITE_OPEN_READWRITE, sqlite::kVfs), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  Answer answers[3];
  for (Answer& a : answers) PublishInto(MakeEvent("order.created"), &a);
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  broker_->FlushWrites();
  for (Answer& a : answers) {
    absl::MutexLock lock(&a.mu);
    ASSERT_TRUE(a.mu.AwaitWithTimeout(absl::Condition(&a.done), absl::Seconds(10)));
    ASSERT_TRUE(a.result.ok()) << a.result.status();
  }
  // A lone publish again: the writer's (the last may have been taken alone,
  // but not eight in a row).
  PublishAlone(1);
  EXPECT_EQ(metrics_->inline_commits.Value(), 1);
  // Eight more lone ones, and they are committed inline again.
  PublishAlone(9);
  EXPECT_GE(metrics_->inline_commits.Value(), 2);
  EXPECT_EQ(broker_->GetStats()->total_events(), 22u);
}

// A subscriber whose first wake-up blocks until released: the inline commit
// that delivers to it is held inside its Dispatch.
class BlockingSink : public SubscriptionSink {
 public:
  void OnReady() override {
    absl::MutexLock lock(&mu_);
    if (entered_) return;
    entered_ = true;
    mu_.Await(absl::Condition(&released_));
  }
  void OnEnd(absl::Status) override {}
  bool WaitEntered() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&entered_), absl::Seconds(10));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }

 private:
  absl::Mutex mu_;
  bool entered_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

TEST_F(BrokerInlineTest, APublishArrivingDuringAnInlineCommitWaitsForItAndEndsTheLoneRun) {
  Open();
  PublishAlone(8);
  BlockingSink sink;
  auto sub = broker_->Subscribe(Everything(v1::SubscribeRequest::LATEST), &sink);
  ASSERT_TRUE(sub.ok()) << sub.status();

  Answer first, second;
  std::thread publisher([&] { PublishInto(MakeEvent("order.created"), &first); });
  ASSERT_TRUE(sink.WaitEntered()) << "the inline commit is delivering";
  PublishInto(MakeEvent("order.created"), &second);
  {
    // Given time, a writer that did not wait for the inline commit would
    // answer this one while the first is still being delivered.
    absl::MutexLock lock(&second.mu);
    EXPECT_FALSE(second.mu.AwaitWithTimeout(absl::Condition(&second.done), absl::Milliseconds(200)))
        << "the writer does not commit while an inline commit is under way";
  }
  sink.Release();
  publisher.join();
  {
    absl::MutexLock lock(&first.mu);
    ASSERT_TRUE(first.done);
    ASSERT_TRUE(first.result.ok()) << first.result.status();
    EXPECT_EQ(first.result->front().sequence, 9u);
  }
  {
    absl::MutexLock lock(&second.mu);
    ASSERT_TRUE(second.mu.AwaitWithTimeout(absl::Condition(&second.done), absl::Seconds(10)));
    ASSERT_TRUE(second.result.ok()) << second.result.status();
    EXPECT_EQ(second.result->front().sequence, 10u);
  }
  EXPECT_EQ(metrics_->inline_commits.Value(), 1);
  // Someone queued behind the inline commit: publishers come together, and
  // the next lone publish is the writer's again.
  PublishAlone(1);
  EXPECT_EQ(metrics_->inline_commits.Value(), 1);
  (*sub)->Close();
}

TEST_F(BrokerInlineTest, APublishOver64KiBIsTheWritersOwn) {
  Open();
  PublishAlone(8);
  events::v1::Event big = MakeEvent("order.created");
  (*big.mutable_data()->mutable_fields())["pad"].set_string_value(std::string(70 * 1024, 'x'));
  auto r = broker_->PublishAndWait({big});
  ASSERT_TRUE(r.ok()) << r.status();
  broker_->FlushWrites();
  EXPECT_EQ(metrics_->inline_commits.Value(), 0);
  PublishAlone(1);
  EXPECT_EQ(metrics_->inline_commits.Value(), 1) << "a small one is committed inline";
}

TEST_F(BrokerInlineTest, WithSyncFullEveryCommitIsTheWritersOwn) {
  // An fsync is not something an RPC's thread may wait for.
  Open(SyncPolicy::kFull);
  PublishAlone(12);  // past the 8 lone commits that enable inline ones
  EXPECT_EQ(metrics_->inline_commits.Value(), 0);
  EXPECT_EQ(broker_->GetStats()->total_events(), 12u);
}

TEST_F(BrokerInlineTest, InlineAndQueuedCommitsKeepOneOrder) {
  Open();
  PublishAlone(8);
  CollectingSink sink;
  auto sub = broker_->Subscribe(Everything(v1::SubscribeRequest::EARLIEST), &sink);
  ASSERT_TRUE(sub.ok()) << sub.status();
  sink.Attach(*sub);

  auto commits = [&] {
    return static_cast<double>(metrics_->commit_latency.Collect().histogram.sample_count);
  };
  const double commits_before = commits();
  constexpr int kThreads = 4, kEach = 300;
  absl::Mutex mu;
  std::set<uint64_t> answered;
  int failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        broker_->Publish({MakeEvent("order.created", absl::StrCat("evt_", t, "_", i))},
                         [&](absl::StatusOr<std::vector<PublishResult>> r) {
                           absl::MutexLock lock(&mu);
                           if (!r.ok() || r->front().duplicate) {
                             ++failures;
                           } else {
                             answered.insert(r->front().sequence);
                           }
                         });
      }
    });
  }
  for (auto& t : threads) t.join();
  broker_->FlushWrites();
  {
    absl::MutexLock lock(&mu);
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return failures + answered.size() == kThreads * kEach;
    };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(20)));
    EXPECT_EQ(failures, 0);
    ASSERT_EQ(answered.size(), static_cast<size_t>(kThreads * kEach));
    EXPECT_EQ(*answered.begin(), 9u);
    EXPECT_EQ(*answered.rbegin(), static_cast<uint64_t>(8 + kThreads * kEach)) << "no gaps";
  }
  // Subscribers see every sequence once, in order.
  auto got = sink.WaitFor(8 + kThreads * kEach, absl::Seconds(20));
  ASSERT_EQ(got.size(), static_cast<size_t>(8 + kThreads * kEach));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].event->seq, i + 1);
  // Both kinds took part: the first publish found nothing queued, and the
  // others queued behind it.
  EXPECT_GT(metrics_->inline_commits.Value(), 0);
  EXPECT_GT(commits() - commits_before - metrics_->inline_commits.Value(), 0)
      << "commits by the writer thread";
  EXPECT_EQ(broker_->GetStats()->total_events(), static_cast<uint64_t>(8 + kThreads * kEach));
}

}  // namespace
}  // namespace switchboard::broker
