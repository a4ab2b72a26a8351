// The real event-broker binary on ephemeral ports, driven through the
// generated gRPC client: delivery, groups, redelivery, crash recovery,
// flow control, bad input, graceful shutdown.
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "tests/broker_it_util.h"
#include "tests/testing/backup.h"

namespace switchboard::broker_it {
namespace {

TEST_P(BrokerIT, PublishThenSubscribeBroadcastAndGroup) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  broker::v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
  EXPECT_EQ(resp.sequence(), 1u);
  EXPECT_TRUE(absl::StartsWith(resp.id(), "evt_")) << resp.id();

  SubscribeRequest all;
  all.set_start(SubscribeRequest::EARLIEST);
  Collector broadcast(stub.get(), all);
  Collector group(stub.get(), GroupReq("g1"), [](const Delivery&) { return true; });
  ASSERT_TRUE(broadcast.started() && group.started());
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.completed"), &resp).ok());
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("cart.abandoned"), &resp).ok());

  ASSERT_TRUE(broadcast.WaitForCount(3));
  auto got = broadcast.Got();
  EXPECT_EQ(got[0].event().type(), "order.created");
  EXPECT_EQ(got[0].event().data().fields().at("orderId").string_value(), "ord_1");
  EXPECT_EQ(got[2].event().type(), "cart.abandoned");
  EXPECT_TRUE(got[0].ack_id().empty());
  ASSERT_TRUE(group.WaitForCount(2));
  got = group.Got();
  EXPECT_EQ(got[0].event().sequence(), 1u);
  EXPECT_EQ(got[1].event().sequence(), 2u);
  EXPECT_EQ(got[0].delivery_attempt(), 1u);
  EXPECT_FALSE(got[0].ack_id().empty());
  ASSERT_TRUE(WaitUntil([&] { return group.Acked().size() == 2; }, absl::Seconds(10)));
}

// Stream writes go with gRPC's buffer_hint when the next delivery is
// already taken: a hinted write that waited for a flush would stall a
// subscriber whose connection carries nothing else. A backlog and then
// small live bursts must all arrive, promptly, on such a connection.
TEST_P(BrokerIT, BacklogAndBurstsArriveWholeOnAConnectionOfTheirOwn) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  auto publish_batch = [&](int n) { return PublishBatchOf(stub.get(), n); };
  ASSERT_TRUE(publish_batch(3000));
  // Distinct channel arguments: distinct connections (a broadcast stream
  // alone on one; the group member and its acks on another).
  auto own = [&](int n) {
    grpc::ChannelArguments args;
    args.SetInt("switchboard_test_own_connection", n);
    return EventBroker::NewStub(
        grpc::CreateCustomChannel(broker->grpc_addr(), grpc::InsecureChannelCredentials(), args));
  };
  auto quiet = own(1), member = own(2);
  SubscribeRequest all;
  all.set_start(SubscribeRequest::EARLIEST);
  Collector broadcast(quiet.get(), all);
  Collector group(member.get(), GroupReq("quiet"), [](const Delivery&) { return true; });
  ASSERT_TRUE(broadcast.started() && group.started());
  ASSERT_TRUE(broadcast.WaitForCount(3000)) << broadcast.Count();
  ASSERT_TRUE(group.WaitForCount(3000)) << group.Count();
  for (int burst = 1; burst <= 5; ++burst) {
    ASSERT_TRUE(publish_batch(3));
    ASSERT_TRUE(WaitUntil([&] { return broadcast.Count() == 3000u + 3 * burst; }, absl::Seconds(5)))
        << "burst " << burst << ": " << broadcast.Count();
    ASSERT_TRUE(WaitUntil([&] { return group.Count() == 3000u + 3 * burst; }, absl::Seconds(5)))
        << "burst " << burst << ": " << group.Count();
  }
}

// SubscribeBatched: a backlog arrives in few messages (each within the
// documented cap), in sequence order, with the same group guarantees as
// Subscribe (an unacked delivery comes back with attempt 2), and a small
// burst after the backlog is not held back.
TEST_P(BrokerIT, SubscribeBatchedCarriesABacklogInFewMessagesWithTheSameGuarantees) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  auto publish_batch = [&](int n) { return PublishBatchOf(stub.get(), n); };
  constexpr int kN = 3000;
  ASSERT_TRUE(publish_batch(kN));
  struct Reader {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<broker::v1::DeliveryBatch>> stream;
    std::vector<Delivery> got;
    int messages = 0, largest = 0;
    // Reads messages until `n` deliveries in all (false when the stream ends).
    bool ReadUntil(size_t n) {
      broker::v1::DeliveryBatch batch;
      while (got.size() < n && stream->Read(&batch)) {
        ++messages;
        largest = std::max(largest, batch.deliveries_size());
        for (const Delivery& d : batch.deliveries()) got.push_back(d);
      }
      return got.size() >= n;
    }
  };
  auto open = [&](Reader* r, const SubscribeRequest& req) {
    r->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    r->stream = stub->SubscribeBatched(&r->ctx, req);
  };
  Reader all, member;
  SubscribeRequest everything;
  everything.set_start(SubscribeRequest::EARLIEST);
  open(&all, everything);
  // (A deadline long enough for reading and acking 3 000 under TSAN.)
  SubscribeRequest group = GroupReq("batched", absl::Seconds(5));
  group.set_max_in_flight(kN + 10);
  open(&member, group);

  ASSERT_TRUE(all.ReadUntil(kN)) << all.got.size();
  for (int i = 0; i < kN; ++i) ASSERT_EQ(all.got[i].event().sequence(), i + 1u) << i;
  EXPECT_LT(all.messages, kN / 10) << "a backlog should travel in batches";
  EXPECT_LE(all.largest, 256);

  ASSERT_TRUE(member.ReadUntil(kN)) << member.got.size();
  std::set<uint64_t> seqs;
  broker::v1::AckRequest ack;
  ack.set_group("batched");
  for (const Delivery& d : member.got) {
    EXPECT_EQ(d.delivery_attempt(), 1u);
    seqs.insert(d.event().sequence());
    if (d.event().sequence() != 7) ack.add_ack_ids(d.ack_id());
  }
  EXPECT_EQ(seqs.size(), static_cast<size_t>(kN));
  EXPECT_LT(member.messages, kN / 10);
  broker::v1::AckResponse acked;
  grpc::ClientContext actx;
  ASSERT_TRUE(stub->Ack(&actx, ack, &acked).ok());
  EXPECT_EQ(acked.acked(), kN - 1u);
  // The one left unacked comes back after its deadline, on the same stream.
  ASSERT_TRUE(member.ReadUntil(kN + 1));
  EXPECT_EQ(member.got.back().event().sequence(), 7u);
  EXPECT_EQ(member.got.back().delivery_attempt(), 2u);

  ASSERT_TRUE(publish_batch(3));
  EXPECT_TRUE(all.ReadUntil(kN + 3)) << all.got.size();
  EXPECT_TRUE(member.ReadUntil(kN + 4)) << member.got.size();
  EXPECT_EQ(all.got.back().event().sequence(), kN + 3u);
}

TEST_P(BrokerIT, TwoGroupMembersShareTheWorkWithoutDuplicates) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  auto ack_all = [](const Delivery&) { return true; };
  Collector a(stub.get(), GroupReq("workers"), ack_all);
  Collector b(stub.get(), GroupReq("workers"), ack_all);
  constexpr int kN = 2000;
  broker::v1::PublishBatchRequest batch;
  for (int i = 0; i < kN; ++i) *batch.add_events() = MakeEvent("order.created");
  broker::v1::PublishBatchResponse br;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->PublishBatch(&ctx, batch, &br).ok());
  ASSERT_TRUE(WaitUntil([&] { return a.Count() + b.Count() >= kN; }, absl::Seconds(30)));
  std::map<uint64_t, int> seen;
  for (auto& d : a.Got()) seen[d.event().sequence()]++;
  for (auto& d : b.Got()) seen[d.event().sequence()]++;
  EXPECT_EQ(seen.size(), static_cast<size_t>(kN));
  for (auto& [seq, n] : seen) ASSERT_EQ(n, 1) << "event " << seq << " delivered to both";
  EXPECT_GT(a.Count(), 0u);
  EXPECT_GT(b.Count(), 0u);
}

// Every event reaches some member promptly, not at its ack deadline: a
// delivery must never wait in a stream for a later write that another member
// took.
TEST_P(BrokerIT, ManyGroupMembersGetEveryEventPromptly) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  auto ack_all = [](const Delivery&) { return true; };
  std::vector<std::unique_ptr<Collector>> members;
  for (int i = 0; i < 4; ++i) {
    members.push_back(
        std::make_unique<Collector>(stub.get(), GroupReq("busy", absl::Seconds(600)), ack_all));
  }
  constexpr int kN = 300;
  for (int i = 0; i < kN; ++i) {
    broker::v1::PublishResponse resp;
    ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
  }
  auto total = [&] {
    size_t n = 0;
    for (auto& m : members) n += m->Count();
    return n;
  };
  EXPECT_TRUE(WaitUntil([&] { return total() >= kN; }, absl::Seconds(20)))
      << "only " << total() << " of " << kN << " delivered";
}

TEST_P(BrokerIT, UnackedEventIsRedeliveredWithAttempt2) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  Collector c(stub.get(), GroupReq("slow", absl::Milliseconds(500)));  // never acks
  broker::v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created", "evt_redeliver"), &resp).ok());
  ASSERT_TRUE(c.WaitForCount(2, absl::Seconds(15)));
  auto got = c.Got();
  EXPECT_EQ(got[0].delivery_attempt(), 1u);
  EXPECT_EQ(got[1].delivery_attempt(), 2u);
  EXPECT_EQ(got[1].event().id(), "evt_redeliver");
  EXPECT_NE(got[0].ack_id(), got[1].ack_id());
}

TEST_P(BrokerIT, KillDashNineLosesNothingAcknowledged) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  std::map<std::string, uint64_t> acknowledged;  // id -> sequence
  std::set<uint64_t> acked_before;
  std::set<uint64_t> ack_sent_before;
  {
    auto stub = Connect(*broker);
    // Acks everything except every tenth event, which stays pending.
    Collector group(stub.get(), GroupReq("crash-group"),
                    [](const Delivery& d) { return d.event().sequence() % 10 != 0; });
    absl::Mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> publishers;
    for (int t = 0; t < 4; ++t) {
      publishers.emplace_back([&, t] {
        auto own = Connect(*broker);
        for (int i = 0; i < 2500 && !stop; ++i) {
          std::string id = absl::StrCat("evt_t", t, "_", i);
          broker::v1::PublishResponse resp;
          if (Publish(own.get(), MakeEvent("order.created", id), &resp).ok()) {
            absl::MutexLock lock(&mu);
            acknowledged[id] = resp.sequence();
          }
        }
      });
    }
    ASSERT_TRUE(WaitUntil(
        [&] {
          absl::MutexLock lock(&mu);
          return acknowledged.size() >= 4000;
        },
        absl::Seconds(60)));
    broker->Kill9();
    stop = true;
    for (auto& t : publishers) t.join();
    group.Finished();
    acked_before = group.Acked();
    ack_sent_before = group.AckSent();
  }
  ASSERT_GE(acknowledged.size(), 4000u);

  broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  std::vector<events::v1::Event> stored = AllEvents(stub.get());
  std::map<std::string, uint64_t> stored_ids;
  uint64_t prev = 0;
  for (const auto& e : stored) {
    ASSERT_GT(e.sequence(), prev) << "sequences strictly increase";
    prev = e.sequence();
    stored_ids[e.id()] = e.sequence();
  }
  uint64_t max_acknowledged = 0;
  for (const auto& [id, seq] : acknowledged) {
    ASSERT_EQ(stored_ids.count(id), 1u) << "acknowledged publish " << id << " lost";
    EXPECT_EQ(stored_ids[id], seq);
    max_acknowledged = std::max(max_acknowledged, seq);
  }
  broker::v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created", "evt_after"), &resp).ok());
  EXPECT_GT(resp.sequence(), prev) << "a sequence is never reused";
  EXPECT_GT(resp.sequence(), max_acknowledged);

  // The group resumes: everything no ack was sent for before the crash comes
  // (again). (An ack in flight at the kill may or may not have been applied.)
  std::set<uint64_t> expected;
  for (const auto& e : stored) {
    if (!ack_sent_before.count(e.sequence())) expected.insert(e.sequence());
  }
  expected.insert(resp.sequence());
  Collector group(stub.get(), GroupReq("crash-group"), [](const Delivery&) { return true; });
  std::set<uint64_t> received;
  std::map<uint64_t, uint32_t> attempt;
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const auto& d : group.Got()) {
          received.insert(d.event().sequence());
          attempt[d.event().sequence()] = d.delivery_attempt();
        }
        return std::includes(received.begin(), received.end(), expected.begin(), expected.end());
      },
      absl::Seconds(60)))
      << "expected " << expected.size() << " received " << received.size();
  // Held-but-unacked events come back as redeliveries.
  int redelivered = 0;
  for (uint64_t seq : expected) {
    if (seq % 10 == 0 && seq < prev && attempt[seq] >= 2) ++redelivered;
  }
  EXPECT_GT(redelivered, 0);
  // It resumed from its committed position, not from the start: acks that
  // reached the broker before the kill are (nearly all) not delivered again.
  size_t again = 0;
  for (uint64_t seq : received) again += acked_before.count(seq);
  EXPECT_LT(again, acked_before.size() / 20 + 50) << "acked events redelivered after restart";
}

TEST_P(BrokerIT, SlowSubscriberNeitherGrowsMemoryNorSlowsOthers) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  // A subscriber that never reads.
  grpc::ClientContext slow_ctx;
  SubscribeRequest live;
  auto slow = stub->Subscribe(&slow_ctx, live);
  slow->WaitForInitialMetadata();
  SubscribeRequest group = GroupReq("fast");
  group.clear_types();
  Collector slow_member(stub.get(), group);  // group member that never acks
  Collector fast(stub.get(), live);
  constexpr int kBatches = 1000, kPerBatch = 100;
  for (int i = 0; i < kBatches; ++i) {
    broker::v1::PublishBatchRequest batch;
    for (int j = 0; j < kPerBatch; ++j) *batch.add_events() = MakeEvent("order.created", "", 200);
    broker::v1::PublishBatchResponse br;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->PublishBatch(&ctx, batch, &br).ok());
  }
  ASSERT_TRUE(fast.WaitForCount(kBatches * kPerBatch, absl::Seconds(60)))
      << "fast subscriber got " << fast.Count();
  uint64_t rss = broker->RssBytes();
#ifdef SWITCHBOARD_SANITIZER_BUILD
  const uint64_t kCeiling = 1024ull << 20;  // shadow memory and ASan's quarantine
#else
  const uint64_t kCeiling = 256ull << 20;
#endif
  EXPECT_LT(rss, kCeiling) << "broker RSS " << (rss >> 20) << " MiB";
  // The never-acking member holds exactly max_in_flight (default 1000).
  EXPECT_EQ(slow_member.Count(), 1000u);
  slow_ctx.TryCancel();
}

TEST_P(BrokerIT, BadInputIsRejectedNamingTheFieldAndStoresNothing) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  Collector group(stub.get(), GroupReq("g"));
  struct Case {
    std::string name;
    std::function<grpc::Status()> call;
    std::string message_prefix;
  };
  std::vector<Case> cases = {
      {"missing event",
       [&] {
         broker::v1::PublishRequest req;
         broker::v1::PublishResponse resp;
         grpc::ClientContext ctx;
         return stub->Publish(&ctx, req, &resp);
       },
       "event: required"},
      {"missing type",
       [&] {
         broker::v1::PublishResponse resp;
         return Publish(stub.get(), MakeEvent(""), &resp);
       },
       "event.type: required"},
      {"malformed type",
       [&] {
         broker::v1::PublishResponse resp;
         return Publish(stub.get(), MakeEvent("Order Created"), &resp);
       },
       "event.type: 'Order Created' is not"},
      {"over the size limit",
       [&] {
         broker::v1::PublishResponse resp;
         return Publish(stub.get(), MakeEvent("order.created", "", 1100000), &resp);
       },
       "event: event is "},
      {"empty batch",
       [&] {
         broker::v1::PublishBatchRequest req;
         broker::v1::PublishBatchResponse resp;
         grpc::ClientContext ctx;
         return stub->PublishBatch(&ctx, req, &resp);
       },
       "events: empty batch"},
      {"bad event inside a batch",
       [&] {
         broker::v1::PublishBatchRequest req;
         *req.add_events() = MakeEvent("order.created");
         *req.add_events() = MakeEvent("order");
         broker::v1::PublishBatchResponse resp;
         grpc::ClientContext ctx;
         return stub->PublishBatch(&ctx, req, &resp);
       },
       "events[1].type:"},
      {"invalid UTF-8 in data",
       [&] {
         events::v1::Event ev = MakeEvent("order.created");
         (*ev.mutable_data()->mutable_fields())["note"].set_string_value("bad \xff\xfe bytes");
         broker::v1::PublishResponse resp;
         return Publish(stub.get(), ev, &resp);
       },
       "event.data"},
      {"unknown ack id",
       [&] {
         broker::v1::AckRequest req;
         req.set_group("g");
         req.add_ack_ids("987654-1");
         broker::v1::AckResponse resp;
         grpc::ClientContext ctx;
         return stub->Ack(&ctx, req, &resp);
       },
       "ack_ids[0]: unknown ack id"},
      {"malformed ack id",
       [&] {
         broker::v1::AckRequest req;
         req.set_group("g");
         req.add_ack_ids("nonsense");
         broker::v1::AckResponse resp;
         grpc::ClientContext ctx;
         return stub->Ack(&ctx, req, &resp);
       },
       "ack_ids[0]:"},
      {"start sequence in the future",
       [&] {
         SubscribeRequest req;
         req.set_start(SubscribeRequest::SEQUENCE);
         req.set_start_sequence(1000000);
         grpc::ClientContext ctx;
         auto reader = stub->Subscribe(&ctx, req);
         Delivery d;
         while (reader->Read(&d)) {
         }
         return reader->Finish();
       },
       "start_sequence: 1000000 is in the future"},
      {"malformed filter",
       [&] {
         SubscribeRequest req;
         req.add_types("order.**");
         grpc::ClientContext ctx;
         auto reader = stub->Subscribe(&ctx, req);
         Delivery d;
         while (reader->Read(&d)) {
         }
         return reader->Finish();
       },
       "types[0]:"},
  };
  for (const Case& c : cases) {
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << s.error_code() << " " << s.error_message();
    EXPECT_TRUE(absl::StartsWith(s.error_message(), c.message_prefix))
        << c.name << ": '" << s.error_message() << "'";
  }
  EXPECT_EQ(TotalEvents(stub.get()), 0u) << "bad input stored something";
  EXPECT_EQ(group.Count(), 0u);
}

TEST_P(BrokerIT, JsonApiOverTheSameCore) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto r = HttpRequest(broker->http_addr(), "POST", "/api/events/test",
                       R"({"type":"order.created","correlationId":"c-42","data":{"total":10}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"sequence\":\"1\""));
  r = HttpRequest(broker->http_addr(), "POST", "/api/events/test", R"({"type":"Bad"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, ::testing::HasSubstr("event.type"));
  r = HttpRequest(broker->http_addr(), "POST", "/api/events/test", R"({"typo":"order.created"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, ::testing::HasSubstr("typo"));
  r = HttpRequest(broker->http_addr(), "GET", "/api/events/history?limit=5&correlation_id=c-42");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"correlationId\":\"c-42\""));
  r = HttpRequest(broker->http_addr(), "GET", "/api/events/history?limit=many");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, ::testing::HasSubstr("limit"));
  r = HttpRequest(broker->http_addr(), "GET", "/api/events/stats");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"totalEvents\":\"1\""));
  r = HttpRequest(broker->http_addr(), "GET", "/health/events");
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"status\":\"healthy\""));
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"eventBus\":{\"active\":true"));
  EXPECT_EQ(HttpRequest(broker->http_addr(), "GET", "/readyz").status, 200);
}

TEST_P(BrokerIT, SyncFullPublishesAndBadPolicyIsRefused) {
  // full (fsync) is the embedded store's; Redis's own are normal/replicated.
  auto broker = StartBroker(data_dir_, {redis_mode() ? "--sync=normal" : "--sync=full"});
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  broker::v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
  EXPECT_EQ(resp.sequence(), 1u);
  std::vector<std::string> args = StoreArgs(data_dir_ + "2");
  args.push_back("--sync=sometimes");
  auto bad = ServiceProcess::Start(BROKER_BIN, args, absl::Seconds(10));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("sync: 'sometimes'"));
}

TEST_P(BrokerIT, SigtermEndsStreamsAndExitsZero) {
  auto broker = StartBroker(data_dir_);
  ASSERT_NE(broker, nullptr);
  auto stub = Connect(*broker);
  SubscribeRequest req;
  Collector c(stub.get(), req);
  broker::v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
  ASSERT_TRUE(c.WaitForCount(1));
  EXPECT_EQ(broker->Terminate(), 0);
  grpc::Status s = c.Finished();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // The acked publish is there after a restart.
  broker = StartBroker(data_dir_);
  auto stub2 = Connect(*broker);
  EXPECT_EQ(TotalEvents(stub2.get()), 1u);
}

constexpr int kReadRefused = 1, kWriteRefused = 2;

// What another process opening `path` with SQLite's stock VFS (a sqlite3
// shell) gets: kReadRefused when a read is answered SQLITE_BUSY,
// kWriteRefused when BEGIN IMMEDIATE is. The child only calls SQLite.
int OutsideSqliteAccess(const std::string& path) {
  pid_t pid = fork();
  if (pid == 0) {
    sqlite3* db = nullptr;
    int code = 0;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
      if (sqlite3_exec(db, "SELECT count(*) FROM events", nullptr, nullptr, nullptr) ==
          SQLITE_BUSY) {
        code |= kReadRefused;
      }
      if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_BUSY) {
        code |= kWriteRefused;
      }
    }
    _exit(code);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One data_dir belongs to one broker (the embedded store locks its file for
// the process: sqlite_util.h): a second broker given it is refused at start,
// naming the file, and the first serves on; once the first has stopped, a
// broker starts on it again and finds what was published.
TEST(BrokerDataDirIT, ASecondBrokerOnTheSameDataDirIsRefused) {
  std::string dir = testing::MakeTempDir();
  auto first = ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + dir});
  ASSERT_TRUE(first.ok()) << first.status();
  auto stub = Connect(**first);
  broker::v1::PublishResponse resp;
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.created"), &resp).ok());
  // The store's reader connection has read too.
  ASSERT_EQ(AllEvents(stub.get()).size(), 1u);

  auto second = ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + dir}, absl::Seconds(20));
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr("events.db' is in use by another process"));
  // An outside sqlite3 (the stock VFS) is locked out too, reading and writing.
  EXPECT_EQ(OutsideSqliteAccess(dir + "/events.db"), kReadRefused | kWriteRefused);
  ASSERT_TRUE(Publish(stub.get(), MakeEvent("order.paid"), &resp).ok());
  EXPECT_EQ(resp.sequence(), 2u);

  EXPECT_EQ((*first)->Terminate(), 0);
  auto again = ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + dir});
  ASSERT_TRUE(again.ok()) << again.status();
  auto stub2 = Connect(**again);
  EXPECT_EQ(TotalEvents(stub2.get()), 2u);
}

// No other process can open a running broker's events.db, so it is copied
// through the admin port: GET /admin/backup/events.db, while publishes go on,
// is a database that passes SQLite's integrity check and holds every event
// acknowledged before the request; the copy made for it is gone afterwards.
TEST(BrokerDataDirIT, BackupIsAConsistentCopyTakenWhilePublishing) {
  std::string dir = testing::MakeTempDir();
  auto broker = ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + dir});
  ASSERT_TRUE(broker.ok()) << broker.status();
  auto stub = Connect(**broker);
  ASSERT_TRUE(PublishBatchOf(stub.get(), 500));
  std::atomic<bool> stop{false};
  std::atomic<int> more{0};
  std::thread publisher([&] {
    while (!stop.load()) {
      broker::v1::PublishResponse resp;
      if (Publish(stub.get(), MakeEvent("order.updated"), &resp).ok()) more++;
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return more.load() >= 20; }, absl::Seconds(10)));
  std::string copy =
      testing::FetchBackup((*broker)->http_addr(), "events.db", testing::MakeTempDir());
  stop = true;
  publisher.join();
  ASSERT_FALSE(copy.empty());
  EXPECT_EQ(testing::IntegrityCheck(copy), "ok");
  int64_t events = testing::QueryInt(copy, "SELECT count(*) FROM events");
  EXPECT_GE(events, 500 + 20);
  EXPECT_LE(events, 500 + more.load());
  EXPECT_EQ(testing::QueryInt(copy, "SELECT max(seq) FROM events"), events);
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/backup-tmp"));

  testing::HttpResult r =
      testing::HttpRequest((*broker)->http_addr(), "GET", "/admin/backup/jobs.db");
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(r.body, ::testing::HasSubstr("one of: events.db"));
}

INSTANTIATE_TEST_SUITE_P(Stores, BrokerIT,
                         ::testing::Values(StoreMode::kEmbedded, StoreMode::kRedis), StoreModeName);

}  // namespace
}  // namespace switchboard::broker_it
