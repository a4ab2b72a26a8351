// The whole mesh on real binaries: broker, job-worker, webhook-delivery and
// the sample receiver (which verifies every signature). An order's webhooks
// arrive signed; a kill -9 of webhook-delivery loses nothing; bad
// registrations and private targets are refused.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"
#include "tests/testing/backup.h"
#include "tests/testing/flag_checks.h"
#include "tests/testing/process.h"

namespace switchboard {
namespace {

using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;

constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// The webhook in a JSON answer of the admin port.
webhooks::v1::Webhook HookFromJson(const std::string& body) {
  webhooks::v1::Webhook w;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(body, &w).ok()) << body;
  return w;
}

int64_t Ms(const google::protobuf::Duration& d) {
  return google::protobuf::util::TimeUtil::DurationToMilliseconds(d);
}

class WebhookIT : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = ServiceProcess::Start(BROKER_BIN, {"--data_dir=" + dir_ + "/broker"});
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    broker_stub_ = broker::v1::EventBroker::NewStub(
        grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
    auto r = ServiceProcess::Start(RECEIVER_BIN, {std::string("--secret=") + kSecret},
                                   absl::Seconds(30), /*grpc=*/false);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
    StartWebhooks({"--allow_private_targets"});
  }

  void StartWebhooks(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--broker=" + broker_->grpc_addr(),
                                     "--data_dir=" + dir_ + "/webhooks"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto w = ServiceProcess::Start(WEBHOOK_BIN, args);
    ASSERT_TRUE(w.ok()) << w.status();
    webhooks_ = *std::move(w);
    ASSERT_TRUE(WaitUntil(
        [&] { return HttpRequest(webhooks_->http_addr(), "GET", "/readyz").status == 200; },
        absl::Seconds(20)))
        << webhooks_->Log();
    webhook_stub_ = webhooks::v1::WebhookService::NewStub(
        grpc::CreateChannel(webhooks_->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Register(const std::string& url, webhooks::v1::Webhook* out,
                        std::vector<std::string> events = {"order.*"},
                        const std::string& secret = kSecret) {
    webhooks::v1::RegisterWebhookRequest req;
    req.set_url(url);
    for (auto& e : events) req.add_events(e);
    req.set_secret(secret);
    *req.mutable_retry_delay() = google::protobuf::util::TimeUtil::MillisecondsToDuration(200);
    grpc::ClientContext ctx;
    return webhook_stub_->RegisterWebhook(&ctx, req, out);
  }

  void Publish(const std::string& type, const std::string& correlation, double total = 42) {
    broker::v1::PublishRequest req;
    req.mutable_event()->set_type(type);
    req.mutable_event()->set_source("checkout-service");
    req.mutable_event()->set_correlation_id(correlation);
    (*req.mutable_event()->mutable_data()->mutable_fields())["total"].set_number_value(total);
    (*req.mutable_event()->mutable_data()->mutable_fields())["customerId"].set_string_value("c1");
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(broker_stub_->Publish(&ctx, req, &resp).ok());
  }

  // What the receiver accepted (each one verified), as parsed bodies.
  std::vector<google::protobuf::Struct> Received(uint64_t* duplicates = nullptr) {
    auto r = HttpRequest(receiver_->http_addr(), "GET", "/received");
    google::protobuf::Struct s;
    std::vector<google::protobuf::Struct> out;
    if (!google::protobuf::util::JsonStringToMessage(r.body, &s).ok()) return out;
    if (duplicates) *duplicates = s.fields().at("duplicates").number_value();
    for (const auto& v : s.fields().at("events").list_value().values()) {
      out.push_back(v.struct_value());
    }
    return out;
  }
  // The job-worker on the same broker, ready (its group subscription is in place).
  void StartWorker() {
    auto w = ServiceProcess::Start(
        WORKER_BIN, {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/worker"});
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = *std::move(w);
    ASSERT_TRUE(
        WaitUntil([&] { return HttpRequest(worker_->http_addr(), "GET", "/readyz").status == 200; },
                  absl::Seconds(20)));
  }
  std::string HookUrl() { return absl::StrCat("http://", receiver_->http_addr(), "/webhooks"); }

  std::string dir_ = testing::MakeTempDir();
  std::unique_ptr<ServiceProcess> broker_, receiver_, webhooks_, worker_;
  std::unique_ptr<broker::v1::EventBroker::Stub> broker_stub_;
  std::unique_ptr<webhooks::v1::WebhookService::Stub> webhook_stub_;
};

TEST_F(WebhookIT, AnOrderArrivesAsSignedWebhooks) {
  ASSERT_NO_FATAL_FAILURE(StartWorker());
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  EXPECT_TRUE(hook.secret() == kSecret);
  Publish("order.checkout_initiated", "wh-order-1");
  // Every step arrives; not necessarily in order: a delivery held by the
  // stream webhook-delivery replaces when the registration changes its
  // filter is redelivered to the new one.
  const std::vector<std::string> steps = {"order.checkout_initiated", "order.created",
                                          "order.payment_completed", "order.completed"};
  std::set<std::string> events;
  ASSERT_TRUE(WaitUntil(
      [&] {
        events.clear();
        for (const auto& b : Received()) events.insert(b.fields().at("event").string_value());
        for (const std::string& t : steps) {
          if (!events.count(t)) return false;
        }
        return true;
      },
      absl::Seconds(30)))
      << "received: " << ::testing::PrintToString(events) << "\n"
      << webhooks_->Log();
  for (const auto& b : Received()) {
    EXPECT_TRUE(b.fields().count("id") && b.fields().count("created") && b.fields().count("data"));
  }
  webhooks::v1::GetStatsResponse stats;
  // Attempts are recorded just after the receiver answered.
  EXPECT_TRUE(WaitUntil(
      [&] {
        grpc::ClientContext ctx;
        return webhook_stub_->GetStats(&ctx, {}, &stats).ok() && stats.delivered_webhooks() >= 4;
      },
      absl::Seconds(20)))
      << stats.DebugString();
  EXPECT_EQ(stats.registered_webhooks(), 1u);

  // Every delivery is listed with its attempt; one can be sent again.
  webhooks::v1::ListDeliveriesRequest list_req;
  list_req.set_webhook_id(hook.id());
  list_req.set_status(webhooks::v1::DELIVERY_STATUS_DELIVERED);
  webhooks::v1::ListDeliveriesResponse list;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(webhook_stub_->ListDeliveries(&ctx, list_req, &list).ok());
  }
  ASSERT_GE(list.deliveries_size(), 4);
  EXPECT_EQ(list.deliveries(0).attempts_size(), 1);
  EXPECT_EQ(list.deliveries(0).attempts(0).http_status(), 204u);
  std::string event_id = list.deliveries(0).event_id();
  uint64_t duplicates_before = 0;
  Received(&duplicates_before);
  webhooks::v1::RedeliverEventRequest redeliver;
  redeliver.set_event_id(event_id);
  webhooks::v1::RedeliverEventResponse redelivered;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(webhook_stub_->RedeliverEvent(&ctx, redeliver, &redelivered).ok());
  }
  ASSERT_EQ(redelivered.deliveries_size(), 1);
  // The receiver sees the same webhook-id again (and dedupes it).
  ASSERT_TRUE(WaitUntil(
      [&] {
        uint64_t d = 0;
        Received(&d);
        return d > duplicates_before;
      },
      absl::Seconds(20)));
  redeliver.set_event_id("evt_unknown");
  grpc::ClientContext ctx;
  EXPECT_EQ(webhook_stub_->RedeliverEvent(&ctx, redeliver, &redelivered).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// One data_dir belongs to one webhook-delivery: a second one given it is
// refused at start, naming the file, and the first delivers on.
TEST_F(WebhookIT, ASecondWebhookDeliveryOnTheSameDataDirIsRefused) {
  auto second = ServiceProcess::Start(
      WEBHOOK_BIN, {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/webhooks"},
      absl::Seconds(20));
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr(".db' is in use by another process"));
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  Publish("order.created", "wh-solo");
  EXPECT_TRUE(WaitUntil([&] { return !Received().empty(); }, absl::Seconds(30)))
      << webhooks_->Log();
}

// Both of webhook-delivery's databases are copied through its admin port
// while it runs: the registry with the endpoint, the outbox with the delivery.
TEST_F(WebhookIT, BackupsHoldTheRegistryAndTheOutbox) {
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  Publish("order.created", "wh-backup");
  ASSERT_TRUE(WaitUntil([&] { return !Received().empty(); }, absl::Seconds(30)))
      << webhooks_->Log();
  std::string dir = testing::MakeTempDir();
  std::string registry = testing::FetchBackup(webhooks_->http_addr(), "webhooks.db", dir);
  std::string outbox = testing::FetchBackup(webhooks_->http_addr(), "deliveries.db", dir);
  ASSERT_FALSE(registry.empty() || outbox.empty());
  EXPECT_EQ(testing::IntegrityCheck(registry), "ok");
  EXPECT_EQ(testing::IntegrityCheck(outbox), "ok");
  EXPECT_EQ(testing::QueryInt(registry, "SELECT count(*) FROM webhooks"), 1);
  EXPECT_GE(testing::QueryInt(outbox, "SELECT count(*) FROM deliveries"), 1);
}

TEST_F(WebhookIT, KillDashNineMidBurstLosesNoDelivery) {
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  constexpr int kN = 300;
  broker::v1::PublishBatchRequest batch;
  for (int i = 0; i < kN; ++i) {
    auto* ev = batch.add_events();
    ev->set_type("order.created");
    ev->set_source("burst");
    ev->set_correlation_id(absl::StrCat("burst-", i));
  }
  broker::v1::PublishBatchResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(broker_stub_->PublishBatch(&ctx, batch, &resp).ok());
  ASSERT_TRUE(WaitUntil([&] { return Received().size() >= 20; }, absl::Seconds(30)));
  webhooks_->Kill9();
  StartWebhooks({"--allow_private_targets"});
  uint64_t duplicates = 0;
  ASSERT_TRUE(WaitUntil([&] { return Received(&duplicates).size() >= kN; }, absl::Seconds(60)))
      << Received().size() << " of " << kN;
  std::set<std::string> ids;
  for (const auto& b : Received()) ids.insert(b.fields().at("id").string_value());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kN)) << "every event once after dedupe on webhook-id";
}

TEST_F(WebhookIT, DuringRotationOldAndNewSecretReceiversBothVerify) {
  const std::string kNew = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
  auto only_new = ServiceProcess::Start(RECEIVER_BIN, {"--secret=" + kNew}, absl::Seconds(30),
                                        /*grpc=*/false);
  ASSERT_TRUE(only_new.ok()) << only_new.status();
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());  // receiver_ knows only the old secret
  webhooks::v1::RotateSecretRequest rotate;
  rotate.set_id(hook.id());
  rotate.set_secret(kNew);
  webhooks::v1::Webhook rotated;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(webhook_stub_->RotateSecret(&ctx, rotate, &rotated).ok());
  }
  EXPECT_EQ(rotated.secret(), kNew);
  EXPECT_TRUE(rotated.has_previous_secret_expires_at());
  auto send_test = [&] {
    webhooks::v1::SendTestEventRequest req;
    req.set_webhook_id(hook.id());
    webhooks::v1::SendTestEventResponse resp;
    grpc::ClientContext ctx;
    return webhook_stub_->SendTestEvent(&ctx, req, &resp);
  };
  ASSERT_TRUE(send_test().ok());
  ASSERT_TRUE(WaitUntil([&] { return Received().size() == 1; }, absl::Seconds(20)))
      << "the old-secret receiver did not verify";
  // Point the webhook at the receiver that has only the new secret.
  webhooks::v1::UpdateWebhookRequest update;
  update.set_id(hook.id());
  update.set_url(absl::StrCat("http://", (*only_new)->http_addr(), "/webhooks"));
  {
    webhooks::v1::Webhook updated;
    grpc::ClientContext ctx;
    ASSERT_TRUE(webhook_stub_->UpdateWebhook(&ctx, update, &updated).ok());
  }
  ASSERT_TRUE(send_test().ok());
  ASSERT_TRUE(WaitUntil(
      [&] {
        return HttpRequest((*only_new)->http_addr(), "GET", "/received")
                   .body.find("webhook.test") != std::string::npos;
      },
      absl::Seconds(20)))
      << "the new-secret receiver did not verify";
}

TEST_F(WebhookIT, DeadEndpointsDoNotDelayAHealthyOne) {
  // One endpoint refuses connections; one accepts them and never answers
  // (a listening socket nobody accepts on).
  int hang_fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(hang_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(hang_fd, 1024), 0);
  socklen_t len = sizeof(addr);
  getsockname(hang_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  webhooks::v1::Webhook dead, hanging, healthy;
  ASSERT_TRUE(Register("http://127.0.0.1:1/refused", &dead).ok());
  ASSERT_TRUE(
      Register(absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/hang"), &hanging).ok());
  ASSERT_TRUE(Register(HookUrl(), &healthy).ok());
  constexpr int kN = 50;
  absl::Time start = absl::Now();
  for (int i = 0; i < kN; ++i) Publish("order.created", absl::StrCat("dead-", i));
  ASSERT_TRUE(WaitUntil([&] { return Received().size() >= kN; }, absl::Seconds(20)))
      << Received().size() << " of " << kN;
  // The hanging endpoint holds its requests for the 30 s timeout; the healthy
  // one got all of its deliveries long before that.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  close(hang_fd);
}

TEST_F(WebhookIT, BadRegistrationsAndPrivateTargetsAreRefused) {
  webhooks::v1::Webhook hook;
  struct Case {
    std::string url;
    std::vector<std::string> events;
    std::string secret;
    std::string prefix;
  };
  for (const Case& c : std::vector<Case>{
           {"ftp://example.com/x", {"order.*"}, kSecret, "url: "},
           {"::not a url::", {"order.*"}, kSecret, "url: "},
           {"https://example.com/x", {}, kSecret, "events: "},
           {"https://example.com/x", {"Order"}, kSecret, "events[0]: "},
           {"https://example.com/x", {"order.*"}, "secret123", "secret: "},
           {"https://example.com/x", {"order.*"}, "whsec_c2hvcnQ=", "secret: "},
       }) {
    grpc::Status s = Register(c.url, &hook, c.events, c.secret);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.url << " " << c.prefix;
    EXPECT_THAT(s.error_message(), ::testing::StartsWith(c.prefix));
  }
  // The same service without --allow_private_targets refuses local targets.
  webhooks_->Terminate();
  StartWebhooks({});
  for (const std::string& url :
       {HookUrl(), std::string("http://localhost:9/x"), std::string("http://10.0.0.1/x"),
        std::string("http://127.1/x"), std::string("http://[::1]/x")}) {
    grpc::Status s = Register(url, &hook);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << url;
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("--allow_targets")) << url;
  }
  webhooks::v1::ListWebhooksResponse list;
  grpc::ClientContext ctx;
  ASSERT_TRUE(webhook_stub_->ListWebhooks(&ctx, {}, &list).ok());
  EXPECT_EQ(list.webhooks_size(), 0);
}

// --allow_targets opens exactly the ranges it names (here the receiver's
// loopback), deliveries to them arrive, and cloud metadata stays refused
// even when every range is allowed.
TEST_F(WebhookIT, AllowTargetsOpensOnlyTheNamedRanges) {
  webhooks_->Terminate();
  StartWebhooks({"--allow_targets=127.0.0.0/8,fd12::/16"});
  webhooks::v1::Webhook hook;
  grpc::Status ok = Register(HookUrl(), &hook);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  for (const std::string& url : {std::string("http://10.0.0.1/x"), std::string("http://[::1]/x"),
                                 std::string("http://169.254.169.254/latest/meta-data/"),
                                 std::string("http://user:pw@127.0.0.1/x")}) {
    grpc::Status s = Register(url, &hook);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << url;
    EXPECT_THAT(s.error_message(), ::testing::StartsWith("url: ")) << url;
    EXPECT_THAT(s.error_message(), ::testing::Not(::testing::HasSubstr("pw@"))) << url;
  }
  Publish("order.created", "allow-targets-1");
  ASSERT_TRUE(WaitUntil([&] { return !Received().empty(); }, absl::Seconds(20)))
      << webhooks_->Log();

  webhooks_->Terminate();
  StartWebhooks({"--allow_private_targets", "--allow_targets=0.0.0.0/0,::/0"});
  for (const std::string& url :
       {std::string("http://169.254.169.254/latest/meta-data/"),
        std::string("http://[fd00:ec2::254]/"), std::string("http://100.100.100.200/"),
        std::string("http://0xa9fea9fe/")}) {
    grpc::Status s = Register(url, &hook);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << url;
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("cloud metadata")) << url;
  }
  testing::ExpectEachExitsTwoNamingTheFlag(
      WEBHOOK_BIN, {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/bad"},
      {{{"--allow_targets=10.0.0.0/40"}, "allow_targets: '10.0.0.0/40'"},
       {{"--allow_targets=10.0.0.0/8,intranet"}, "allow_targets: 'intranet'"}},
      "no-secret-here");
}

// --secrets_key_file: the outbox files hold no signing secret, deliveries
// still verify, a rotated key file (new key first, old second) reads what the
// old key sealed, and a store without its key does not start.
TEST_F(WebhookIT, SecretsAreSealedAtRestAndSurviveAKeyRotation) {
  const std::string keys = dir_ + "/secrets.key";
  const std::string key1 = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
  const std::string key2 = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";
  std::ofstream(keys) << key1 << "\n";
  webhooks_->Terminate();
  StartWebhooks({"--allow_private_targets", "--secrets_key_file=" + keys});
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  Publish("order.created", "sealed-1");
  ASSERT_TRUE(WaitUntil([&] { return Received().size() == 1; }, absl::Seconds(20)))
      << webhooks_->Log();
  webhooks_->Terminate();
  std::string disk;
  for (const auto& f : std::filesystem::directory_iterator(dir_ + "/webhooks")) {
    std::ifstream in(f.path(), std::ios::binary);
    disk += std::string(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_THAT(disk, ::testing::HasSubstr(hook.id()));
  EXPECT_THAT(disk, ::testing::Not(::testing::HasSubstr("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")));

  std::ofstream(keys) << key2 << "\n" << key1 << "\n";
  StartWebhooks({"--allow_private_targets", "--secrets_key_file=" + keys});
  Publish("order.created", "sealed-2");
  ASSERT_TRUE(WaitUntil([&] { return Received().size() == 2; }, absl::Seconds(20)))
      << webhooks_->Log();
  EXPECT_THAT(webhooks_->Log(), ::testing::HasSubstr("sealed with the current key"));
  webhooks_->Terminate();
  // The start with both keys sealed everything with the new one: the old
  // key can go.
  std::ofstream(keys) << key2 << "\n";
  StartWebhooks({"--allow_private_targets", "--secrets_key_file=" + keys});
  Publish("order.created", "sealed-3");
  ASSERT_TRUE(WaitUntil([&] { return Received().size() == 3; }, absl::Seconds(20)))
      << webhooks_->Log();
  webhooks_->Terminate();
  testing::ExitResult r =
      testing::RunToExit(WEBHOOK_BIN,
                         {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/webhooks",
                          "--grpc_addr=127.0.0.1:0", "--http_addr=127.0.0.1:0"},
                         absl::Seconds(20));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("--secrets_key_file"));
}

// The original design's registration bodies through the JSON route, with
// durations as numbers of milliseconds; protobuf's duration strings and the
// proto field names keep working.
TEST_F(WebhookIT, DesignRegistrationBodiesOverJsonTakeMilliseconds) {
  const std::string addr = webhooks_->http_addr();
  // §4 "Webhook Registration", verbatim: its secret "webhook-secret-key" is
  // no whsec_ secret; it is taken as a raw HMAC key.
  auto r = HttpRequest(
      addr, "POST", "/api/webhooks/register",
      R"({"url":"https://api.external.com/webhooks/orders","secret":"webhook-secret-key",)"
      R"("events":["order.created","order.payment_completed","order.completed"],)"
      R"("retryAttempts":3,"retryDelay":5000,"timeout":30000})");
  ASSERT_EQ(r.status, 201) << r.body;
  webhooks::v1::Webhook hook = HookFromJson(r.body);
  EXPECT_EQ(hook.url(), "https://api.external.com/webhooks/orders");
  EXPECT_EQ(hook.events_size(), 3);
  EXPECT_EQ(hook.secret(), "webhook-secret-key");
  EXPECT_EQ(hook.retry_attempts(), 3u);
  EXPECT_EQ(Ms(hook.retry_delay()), 5000);
  EXPECT_EQ(Ms(hook.timeout()), 30000);
  webhooks::v1::GetWebhookRequest get;
  get.set_id(hook.id());
  webhooks::v1::Webhook stored;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(webhook_stub_->GetWebhook(&ctx, get, &stored).ok());
  }
  EXPECT_EQ(Ms(stored.retry_delay()), 5000) << "gRPC sees what the JSON route stored";
  EXPECT_EQ(Ms(stored.timeout()), 30000);

  // §6 "External System Integration": no durations, so the defaults.
  r = HttpRequest(addr, "POST", "/api/webhooks/register",
                  absl::StrCat(R"({"url":"https://crm.example.com/webhooks/orders","secret":")",
                               kSecret, R"(","events":["order.completed"],"retryAttempts":5})"));
  ASSERT_EQ(r.status, 201) << r.body;
  hook = HookFromJson(r.body);
  EXPECT_EQ(hook.retry_attempts(), 5u);
  EXPECT_EQ(Ms(hook.retry_delay()), 5000) << "WEBHOOK_RETRY_DELAY default";
  EXPECT_EQ(Ms(hook.timeout()), 30000) << "WEBHOOK_TIMEOUT default";

  // Duration strings and snake_case names, as before.
  r = HttpRequest(addr, "POST", "/api/webhooks/register",
                  absl::StrCat(R"({"url":")", HookUrl(),
                               R"(","events":["order.*"],"retry_delay":"0.250s","timeout":"2s"})"));
  ASSERT_EQ(r.status, 201) << r.body;
  hook = HookFromJson(r.body);
  EXPECT_EQ(Ms(hook.retry_delay()), 250);
  EXPECT_EQ(Ms(hook.timeout()), 2000);
  r = HttpRequest(addr, "GET", "/api/webhooks");
  ASSERT_EQ(r.status, 200) << r.body;
  webhooks::v1::ListWebhooksResponse list;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.body, &list).ok()) << r.body;
  EXPECT_EQ(list.webhooks_size(), 3);
}

// The design's raw secret signs real deliveries that a receiver holding the
// same secret verifies.
TEST_F(WebhookIT, DesignSecretSignsDeliveriesTheReceiverVerifies) {
  auto raw_receiver = ServiceProcess::Start(RECEIVER_BIN, {"--secret=webhook-secret-key"},
                                            absl::Seconds(30), /*grpc=*/false);
  ASSERT_TRUE(raw_receiver.ok()) << raw_receiver.status();
  const std::string addr = webhooks_->http_addr();
  auto r = HttpRequest(addr, "POST", "/api/webhooks/register",
                       absl::StrCat(R"({"url":"http://)", (*raw_receiver)->http_addr(),
                                    R"(/webhooks","secret":"webhook-secret-key",)"
                                    R"("events":["order.created"],"retryDelay":200})"));
  ASSERT_EQ(r.status, 201) << r.body;
  webhooks::v1::Webhook hook = HookFromJson(r.body);
  Publish("order.created", "raw-secret-1");
  r = HttpRequest(addr, "POST", "/api/webhooks/test",
                  absl::StrCat(R"({"webhookId":")", hook.id(), R"("})"));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string body = HttpRequest((*raw_receiver)->http_addr(), "GET", "/received").body;
        return body.find("webhook.test") != std::string::npos &&
               body.find("order.created") != std::string::npos;
      },
      absl::Seconds(20)))
      << "the receiver did not verify: "
      << HttpRequest((*raw_receiver)->http_addr(), "GET", "/received").body << "\n"
      << (*raw_receiver)->Log();
  webhooks::v1::ListDeliveriesRequest list_req;
  list_req.set_webhook_id(hook.id());
  webhooks::v1::ListDeliveriesResponse list;
  // The attempt is recorded just after the receiver answered.
  ASSERT_TRUE(WaitUntil(
      [&] {
        grpc::ClientContext ctx;
        list.Clear();
        if (!webhook_stub_->ListDeliveries(&ctx, list_req, &list).ok()) return false;
        for (const auto& d : list.deliveries()) {
          if (d.status() != webhooks::v1::DELIVERY_STATUS_DELIVERED) return false;
        }
        return list.deliveries_size() >= 2;
      },
      absl::Seconds(20)))
      << list.DebugString();
  for (const auto& d : list.deliveries()) {
    EXPECT_EQ(d.status(), webhooks::v1::DELIVERY_STATUS_DELIVERED) << d.DebugString();
    ASSERT_GE(d.attempts_size(), 1);
    EXPECT_EQ(d.attempts(0).http_status(), 204u) << "verified on the first attempt";
  }
}

TEST_F(WebhookIT, JsonUpdateTakesMillisecondsAndDurationStrings) {
  const std::string addr = webhooks_->http_addr();
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  const std::string path = "/api/webhooks/" + hook.id();
  auto r =
      HttpRequest(addr, "PATCH", path, R"({"retryAttempts":4,"retryDelay":7000,"timeout":10000})");
  ASSERT_EQ(r.status, 200) << r.body;
  webhooks::v1::Webhook updated = HookFromJson(r.body);
  EXPECT_EQ(updated.retry_attempts(), 4u);
  EXPECT_EQ(Ms(updated.retry_delay()), 7000);
  EXPECT_EQ(Ms(updated.timeout()), 10000);
  EXPECT_TRUE(updated.secret().empty()) << "only register and rotate answer the secret";
  EXPECT_EQ(updated.url(), HookUrl()) << "fields left out keep their value";

  r = HttpRequest(addr, "PATCH", path, R"({"retry_delay":1500,"timeout":"2.5s"})");
  ASSERT_EQ(r.status, 200) << r.body;
  updated = HookFromJson(r.body);
  EXPECT_EQ(Ms(updated.retry_delay()), 1500);
  EXPECT_EQ(Ms(updated.timeout()), 2500);

  // A duration-looking text inside a string value is not touched.
  r = HttpRequest(addr, "PATCH", path,
                  R"({"description":"say \"retryDelay\":-1, {[ unbalanced","retryDelay":2500})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = HttpRequest(addr, "GET", path);
  ASSERT_EQ(r.status, 200) << r.body;
  updated = HookFromJson(r.body);
  EXPECT_EQ(updated.description(), R"(say "retryDelay":-1, {[ unbalanced)");
  EXPECT_EQ(Ms(updated.retry_delay()), 2500);
  EXPECT_EQ(Ms(updated.timeout()), 2500);
  EXPECT_EQ(HttpRequest(addr, "PATCH", "/api/webhooks/wh_nope", "{}").status, 404);
}

TEST_F(WebhookIT, JsonBadDurationsNameTheFieldAndChangeNothing) {
  const std::string addr = webhooks_->http_addr();
  webhooks::v1::Webhook hook;
  ASSERT_TRUE(Register(HookUrl(), &hook).ok());
  auto stored = [&] {
    webhooks::v1::GetWebhookRequest get;
    get.set_id(hook.id());
    webhooks::v1::Webhook w;
    grpc::ClientContext ctx;
    EXPECT_TRUE(webhook_stub_->GetWebhook(&ctx, get, &w).ok());
    return w;
  };
  const webhooks::v1::Webhook before = stored();
  struct Case {
    std::string members;  // a JSON object
    std::string named;    // what the error message names
  };
  for (const Case& c : std::vector<Case>{
           {R"({"retryDelay":-1})", "retryDelay: "},
           {R"({"retryDelay":5000.5})", "retryDelay: "},
           {R"({"retryDelay":NaN})", "retryDelay: "},
           {R"({"retryDelay":true})", "retryDelay: "},
           {R"({"timeout":1e300})", "timeout: "},
           {R"({"timeout":Infinity})", "timeout: "},
           {R"({"retry_delay":-250})", "retry_delay: "},
           {R"({"retryAttempts":2,"timeout":-30000})", "timeout: "},
           // Converted, then out of the service's range (24 h; 100 ms).
           {R"({"retryDelay":86400001})", "retry_delay"},
           {R"({"timeout":0})", "timeout"},
           // Strings go to protobuf's duration parser as before.
           {R"({"retryDelay":"5 seconds"})", "duration"},
       }) {
    auto r = HttpRequest(addr, "PATCH", "/api/webhooks/" + hook.id(), c.members);
    EXPECT_EQ(r.status, 400) << c.members << " -> " << r.body;
    EXPECT_THAT(r.body, ::testing::HasSubstr(c.named)) << c.members;
    r = HttpRequest(
        addr, "POST", "/api/webhooks/register",
        absl::StrCat(R"({"url":")", HookUrl(), R"(","events":["order.*"],)", c.members.substr(1)));
    EXPECT_EQ(r.status, 400) << c.members << " -> " << r.body;
    EXPECT_THAT(r.body, ::testing::HasSubstr(c.named)) << c.members;
  }
  auto r = HttpRequest(addr, "PATCH", "/api/webhooks/" + hook.id(), R"({"id":"wh_other"})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, ::testing::HasSubstr("id: "));
  EXPECT_EQ(stored().DebugString(), before.DebugString()) << "a refused update changed nothing";
  webhooks::v1::ListWebhooksResponse list;
  grpc::ClientContext ctx;
  ASSERT_TRUE(webhook_stub_->ListWebhooks(&ctx, {}, &list).ok());
  EXPECT_EQ(list.webhooks_size(), 1) << "a refused registration stored nothing";
}

// The design's event bodies (createEvent of order.created, job.enqueued and
// job.started) through the broker's JSON route, then traced.
TEST_F(WebhookIT, DesignEventBodiesPublishOverTheBrokersJson) {
  const std::string addr = broker_->http_addr();
  for (const std::string& body : {
           std::string(R"({"type":"order.created","source":"checkout-service",)"
                       R"("correlationId":"checkout_789","userId":"user_456",)"
                       R"("data":{"orderId":"ord_123","customerId":"user_456","total":"99.99"}})"),
           std::string(R"({"type":"job.enqueued","correlationId":"checkout_789",)"
                       R"("data":{"jobId":"job_1","jobType":"order-creation",)"
                       R"("queueName":"order-processing"}})"),
           std::string(R"({"type":"job.started","correlationId":"checkout_789",)"
                       R"("data":{"jobId":"job_1","workerId":"worker_1",)"
                       R"("startedAt":"2024-01-01T10:00:00Z"}})"),
       }) {
    auto r = HttpRequest(addr, "POST", "/api/events/test", body);
    EXPECT_EQ(r.status, 200) << body << " -> " << r.body;
  }
  auto r = HttpRequest(addr, "GET", "/api/events/history?limit=50&correlation_id=checkout_789");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"orderId\":\"ord_123\""));
  EXPECT_THAT(r.body, ::testing::HasSubstr("\"workerId\":\"worker_1\""));
}

// The original design's receiving endpoints (issue 14): the sample receiver
// serves /api/webhooks/order-status and /api/webhooks/worker-status (and
// /api/webhooks/test), verifying each; order.* and job.* go to their own.
TEST_F(WebhookIT, TheDesignsReceivingEndpointsGetOrderAndWorkerStatus) {
  ASSERT_NO_FATAL_FAILURE(StartWorker());
  std::string base = absl::StrCat("http://", receiver_->http_addr(), "/api/webhooks/");
  webhooks::v1::Webhook orders, workers;
  ASSERT_TRUE(Register(base + "order-status", &orders, {"order.*"}).ok());
  ASSERT_TRUE(Register(base + "worker-status", &workers, {"job.*"}).ok());
  Publish("order.checkout_initiated", "wh-design-paths");
  google::protobuf::Struct listing;
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto r = HttpRequest(receiver_->http_addr(), "GET", "/received");
        listing.Clear();
        if (!google::protobuf::util::JsonStringToMessage(r.body, &listing).ok()) return false;
        const auto& by_path = listing.fields().at("byPath").struct_value().fields();
        return by_path.count("/api/webhooks/order-status") &&
               by_path.count("/api/webhooks/worker-status") &&
               by_path.at("/api/webhooks/order-status").number_value() >= 7;
      },
      absl::Seconds(30)))
      << listing.DebugString();
  // Each body went where its type belongs, verified by the receiver.
  std::map<std::string, int> kinds;
  for (const auto& b : Received()) kinds[b.fields().at("event").string_value().substr(0, 4)]++;
  EXPECT_GT(kinds["orde"], 0);
  EXPECT_GT(kinds["job."], 0);
  auto test = HttpRequest(receiver_->http_addr(), "POST", "/api/webhooks/test", "{}");
  EXPECT_EQ(test.status, 401) << "unsigned requests are refused there too";
}

}  // namespace
}  // namespace switchboard
