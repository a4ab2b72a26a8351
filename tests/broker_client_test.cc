// The shared broker client against the real broker, across a kill -9 and a
// restart on the same port: publishes retry and stay idempotent, group
// subscriptions reconnect and resume.
#include "libs/broker_client/broker_client.h"

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/testing/process.h"

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

class BrokerClientIT : public ::testing::Test {
 protected:
  void StartBroker(const std::string& grpc_addr = "127.0.0.1:0") {
    auto p =
        ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + data_dir_, "--grpc_addr=" + grpc_addr});
    ASSERT_TRUE(p.ok()) << p.status();
    broker_ = *std::move(p);
  }
  std::string data_dir_ = testing::MakeTempDir();
  std::unique_ptr<ServiceProcess> broker_;
};

TEST_F(BrokerClientIT, PublishRetriesThroughARestartAndStaysIdempotent) {
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

TEST_F(BrokerClientIT, GroupSubscriptionReconnectsAndResumes) {
  StartBroker();
  std::string addr = broker_->grpc_addr();
  auto client = NewGrpcBrokerClient({addr, absl::Milliseconds(20), absl::Milliseconds(200)});
  absl::Mutex mu;
  std::vector<broker::v1::Delivery> got;
  broker::v1::SubscribeRequest req;
  req.set_group("client-group");
  req.add_types("order.*");
  req.set_start(broker::v1::SubscribeRequest::EARLIEST);
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
  StartBroker(addr);
  ASSERT_TRUE(client->Publish(OrderEvent("order.paid"), absl::Seconds(10)).ok());
  // After the restart: the pending event 2 comes again, then the new one.
  ASSERT_TRUE(WaitUntil(
      [&] {
        absl::MutexLock l(&mu);
        std::set<uint64_t> after;
        for (size_t i = 3; i < got.size(); ++i) after.insert(got[i].event().sequence());
        return after.count(2) && after.count(4);
      },
      absl::Seconds(30)));
  {
    absl::MutexLock l(&mu);
    for (size_t i = 3; i < got.size(); ++i) {
      if (got[i].event().sequence() == 2) {
        EXPECT_GE(got[i].delivery_attempt(), 2u);
      }
    }
  }
  EXPECT_TRUE(sub->connected());
  sub->Stop();
}

}  // namespace
}  // namespace switchboard
