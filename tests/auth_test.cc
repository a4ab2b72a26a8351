// Bearer tokens and scopes on the real binaries: a table of principals x
// RPCs x expected status for all three services, over gRPC and the JSON API;
// history and stats trimmed to what a principal may see; the mesh running the
// order flow with tokens on (job-worker and webhook-delivery presenting their
// own); the tokens file reloaded; a client certificate mapped to a principal.
#include "libs/common/auth.h"

#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "libs/security/tls.h"
#include "switchboard/broker/v1/broker.grpc.pb.h"
#include "switchboard/jobs/v1/jobs.grpc.pb.h"
#include "switchboard/webhooks/v1/webhooks.grpc.pb.h"
#include "tests/testing/certs.h"
#include "tests/testing/process.h"

namespace switchboard {
namespace {

using grpc::StatusCode;
using testing::HttpRequest;
using testing::ServiceProcess;
using testing::WaitUntil;

constexpr char kSecret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Entry {
  const char* principal;
  const char* token;
  const char* scopes;  // JSON list
};
const Entry kPrincipals[] = {
    {"checkout", "tok-checkout-7f3a", R"(["publish:order.*"])"},
    {"tracker", "tok-tracker-19bd", R"(["subscribe:order.*"])"},
    {"billing", "tok-billing-55e0", R"(["subscribe:order.*@billing"])"},
    {"jobs-reader", "tok-jobs-read-a1", R"(["jobs:read"])"},
    {"jobs-operator", "tok-jobs-admin-b2", R"(["jobs:admin"])"},
    {"hooks-reader", "tok-hooks-read-c3", R"(["webhooks:read"])"},
    {"hooks-operator", "tok-hooks-admin-d4", R"(["webhooks:admin"])"},
    {"root", "tok-admin-e5", R"(["admin"])"},
    {"job-worker", "tok-worker-f6",
     R"(["publish:order.*","publish:job.*","publish:email.*","subscribe:*@job-worker"])"},
    {"webhook-delivery", "tok-webhooks-07", R"(["subscribe:*@webhook-delivery"])"},
};

std::string TokenOf(const std::string& principal) {
  for (const Entry& e : kPrincipals) {
    if (principal == e.principal) return e.token;
  }
  return principal;  // "" (none) and "bogus" are sent as they are
}

std::string TokensFile(const std::vector<std::string>& extra = {}) {
  std::string out = "# principals of the auth test\n";
  for (const Entry& e : kPrincipals) {
    absl::StrAppend(&out, R"({"principal":")", e.principal, R"(","token_sha256":")",
                    Sha256Hex(e.token), R"(","scopes":)", e.scopes, "}\n");
  }
  for (const std::string& line : extra) absl::StrAppend(&out, line, "\n");
  return out;
}

class AuthIT : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir();
    tokens_ = dir_ + "/tokens.jsonl";
    std::ofstream(tokens_) << TokensFile();
    std::ofstream(dir_ + "/worker.token") << "tok-worker-f6\n";
    std::ofstream(dir_ + "/webhooks.token") << "tok-webhooks-07\n";
  }

  void StartMesh(const std::vector<std::string>& broker_extra = {}) {
    std::vector<std::string> args = {"--data_dir=" + dir_ + "/broker",
                                     "--auth_tokens_file=" + tokens_};
    args.insert(args.end(), broker_extra.begin(), broker_extra.end());
    auto b = ServiceProcess::Start(BROKER_BIN, args);
    ASSERT_TRUE(b.ok()) << b.status();
    broker_ = *std::move(b);
    auto w = ServiceProcess::Start(
        WORKER_BIN,
        {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/worker",
         "--auth_tokens_file=" + tokens_, "--broker_token_file=" + dir_ + "/worker.token"});
    ASSERT_TRUE(w.ok()) << w.status();
    worker_ = *std::move(w);
    auto h = ServiceProcess::Start(
        WEBHOOK_BIN,
        {"--broker=" + broker_->grpc_addr(), "--data_dir=" + dir_ + "/webhooks",
         "--auth_tokens_file=" + tokens_, "--broker_token_file=" + dir_ + "/webhooks.token",
         "--allow_private_targets"});
    ASSERT_TRUE(h.ok()) << h.status();
    hooks_ = *std::move(h);
    for (auto* p : {worker_.get(), hooks_.get()}) {
      ASSERT_TRUE(
          WaitUntil([&] { return HttpRequest(p->http_addr(), "GET", "/readyz").status == 200; },
                    absl::Seconds(20)))
          << p->Log();
    }
    broker_stub_ = broker::v1::EventBroker::NewStub(
        grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
    jobs_stub_ = jobs::v1::JobWorker::NewStub(
        grpc::CreateChannel(worker_->grpc_addr(), grpc::InsecureChannelCredentials()));
    hooks_stub_ = webhooks::v1::WebhookService::NewStub(
        grpc::CreateChannel(hooks_->grpc_addr(), grpc::InsecureChannelCredentials()));
  }

  static void As(grpc::ClientContext* ctx, const std::string& principal) {
    std::string token = TokenOf(principal);
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  grpc::Status Publish(const std::string& who, const std::string& type,
                       const std::string& correlation = "auth-1") {
    broker::v1::PublishRequest req;
    req.mutable_event()->set_type(type);
    req.mutable_event()->set_source("auth-test");
    req.mutable_event()->set_correlation_id(correlation);
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    As(&ctx, who);
    return broker_stub_->Publish(&ctx, req, &resp);
  }

  // A subscription the broker accepts stays open (the short deadline ends
  // it); a refused one ends at once with the refusal.
  StatusCode Subscribe(const std::string& who, std::vector<std::string> types,
                       const std::string& group = "", bool batched = false) {
    broker::v1::SubscribeRequest req;
    for (auto& t : types) req.add_types(t);
    req.set_group(group);
    grpc::ClientContext ctx;
    As(&ctx, who);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    if (batched) {
      auto reader = broker_stub_->SubscribeBatched(&ctx, req);
      broker::v1::DeliveryBatch d;
      while (reader->Read(&d)) {
      }
      return reader->Finish().error_code();
    }
    auto reader = broker_stub_->Subscribe(&ctx, req);
    broker::v1::Delivery d;
    while (reader->Read(&d)) {
    }
    return reader->Finish().error_code();
  }

  std::string dir_, tokens_;
  std::unique_ptr<ServiceProcess> broker_, worker_, hooks_;
  std::unique_ptr<broker::v1::EventBroker::Stub> broker_stub_;
  std::unique_ptr<jobs::v1::JobWorker::Stub> jobs_stub_;
  std::unique_ptr<webhooks::v1::WebhookService::Stub> hooks_stub_;
};

constexpr StatusCode OK = StatusCode::OK;
constexpr StatusCode UNAUTH = StatusCode::UNAUTHENTICATED;
constexpr StatusCode DENIED = StatusCode::PERMISSION_DENIED;
// Allowed past authentication and authorisation; what the call then does is
// not the point (an unknown ack id, say).
constexpr StatusCode ALLOWED = StatusCode::DO_NOT_USE;

// A unary call as `who`, with a default request: for the table, only whether
// the caller gets past authentication and authorisation matters.
template <typename Stub, typename Req, typename Resp>
std::function<grpc::Status(const std::string&)> UnaryAs(
    Stub* stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    Req req = Req()) {
  return [stub, method, req](const std::string& who) {
    Resp resp;
    grpc::ClientContext ctx;
    std::string token = TokenOf(who);
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return (stub->*method)(&ctx, req, &resp);
  };
}

TEST_F(AuthIT, PrincipalsTimesRpcsOverGrpc) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  using Call = std::function<grpc::Status(const std::string& who)>;
  using BrokerStub = broker::v1::EventBroker::Stub;
  using JobsStub = jobs::v1::JobWorker::Stub;
  using HooksStub = webhooks::v1::WebhookService::Stub;
  auto* b = broker_stub_.get();
  auto* j = jobs_stub_.get();
  auto* h = hooks_stub_.get();
  broker::v1::NackRequest nack;
  nack.set_group("billing");
  nack.add_ack_ids("nope");
  broker::v1::ModifyAckDeadlineRequest modify;
  modify.set_group("billing");
  modify.add_ack_ids("nope");
  jobs::v1::GetJobRequest get_job;
  get_job.set_id("job_nope");
  webhooks::v1::GetWebhookRequest get_hook;
  get_hook.set_id("wh_nope");
  webhooks::v1::UnregisterWebhookRequest unregister;
  unregister.set_id("wh_nope");
  webhooks::v1::UpdateWebhookRequest update;
  update.set_id("wh_nope");
  webhooks::v1::RotateSecretRequest rotate;
  rotate.set_id("wh_nope");
  webhooks::v1::RedeliverEventRequest redeliver;
  redeliver.set_event_id("evt_nope");
  webhooks::v1::SendTestEventRequest test_event;
  test_event.set_webhook_id("wh_nope");
  std::map<std::string, Call> calls = {
      {"broker.Nack(billing)", UnaryAs<BrokerStub>(b, &BrokerStub::Nack, nack)},
      {"broker.ModifyAckDeadline(billing)",
       UnaryAs<BrokerStub>(b, &BrokerStub::ModifyAckDeadline, modify)},
      {"broker.GetEventHistory",
       UnaryAs<BrokerStub, broker::v1::GetEventHistoryRequest, broker::v1::GetEventHistoryResponse>(
           b, &BrokerStub::GetEventHistory)},
      {"jobs.GetStats", UnaryAs<JobsStub, jobs::v1::GetStatsRequest, jobs::v1::GetStatsResponse>(
                            j, &JobsStub::GetStats)},
      {"jobs.GetJob", UnaryAs<JobsStub>(j, &JobsStub::GetJob, get_job)},
      {"hooks.GetWebhook", UnaryAs<HooksStub>(h, &HooksStub::GetWebhook, get_hook)},
      {"hooks.UnregisterWebhook", UnaryAs<HooksStub>(h, &HooksStub::UnregisterWebhook, unregister)},
      {"hooks.UpdateWebhook", UnaryAs<HooksStub>(h, &HooksStub::UpdateWebhook, update)},
      {"hooks.RotateSecret", UnaryAs<HooksStub>(h, &HooksStub::RotateSecret, rotate)},
      {"hooks.GetStats",
       UnaryAs<HooksStub, webhooks::v1::GetStatsRequest, webhooks::v1::GetStatsResponse>(
           h, &HooksStub::GetStats)},
      {"hooks.ListDeliveries",
       UnaryAs<HooksStub, webhooks::v1::ListDeliveriesRequest,
               webhooks::v1::ListDeliveriesResponse>(h, &HooksStub::ListDeliveries)},
      {"hooks.RedeliverEvent", UnaryAs<HooksStub>(h, &HooksStub::RedeliverEvent, redeliver)},
      {"hooks.SendTestEvent", UnaryAs<HooksStub>(h, &HooksStub::SendTestEvent, test_event)},
      {"broker.Publish(order.created)",
       [&](const std::string& w) { return Publish(w, "order.created"); }},
      {"broker.Publish(user.created)",
       [&](const std::string& w) { return Publish(w, "user.created"); }},
      {"broker.PublishBatch(order.created,user.created)",
       [&](const std::string& w) {
         broker::v1::PublishBatchRequest req;
         for (const char* t : {"order.created", "user.created"}) {
           auto* e = req.add_events();
           e->set_type(t);
           e->set_source("auth-test");
         }
         broker::v1::PublishBatchResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return broker_stub_->PublishBatch(&ctx, req, &resp);
       }},
      {"broker.Ack(billing)",
       [&](const std::string& w) {
         broker::v1::AckRequest req;
         req.set_group("billing");
         req.add_ack_ids("nope");
         broker::v1::AckResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return broker_stub_->Ack(&ctx, req, &resp);
       }},
      {"broker.ListDeadLetters(billing)",
       [&](const std::string& w) {
         broker::v1::ListDeadLettersRequest req;
         req.set_group("billing");
         broker::v1::ListDeadLettersResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return broker_stub_->ListDeadLetters(&ctx, req, &resp);
       }},
      {"broker.ReplayDeadLetters(billing)",
       [&](const std::string& w) {
         broker::v1::ReplayDeadLettersRequest req;
         req.set_group("billing");
         broker::v1::ReplayDeadLettersResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return broker_stub_->ReplayDeadLetters(&ctx, req, &resp);
       }},
      {"broker.GetStats",
       [&](const std::string& w) {
         broker::v1::GetStatsResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return broker_stub_->GetStats(&ctx, {}, &resp);
       }},
      {"jobs.ListJobs",
       [&](const std::string& w) {
         jobs::v1::ListJobsResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return jobs_stub_->ListJobs(&ctx, {}, &resp);
       }},
      {"jobs.PauseQueue(payments)",
       [&](const std::string& w) {
         jobs::v1::PauseQueueRequest req;
         req.set_queue("payments");
         jobs::v1::QueueStats resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         grpc::Status s = jobs_stub_->PauseQueue(&ctx, req, &resp);
         if (s.ok()) {
           jobs::v1::ResumeQueueRequest resume;
           resume.set_queue("payments");
           grpc::ClientContext rctx;
           As(&rctx, w);
           EXPECT_TRUE(jobs_stub_->ResumeQueue(&rctx, resume, &resp).ok());
         }
         return s;
       }},
      {"hooks.ListWebhooks",
       [&](const std::string& w) {
         webhooks::v1::ListWebhooksResponse resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return hooks_stub_->ListWebhooks(&ctx, {}, &resp);
       }},
      {"hooks.RegisterWebhook",
       [&](const std::string& w) {
         webhooks::v1::RegisterWebhookRequest req;
         req.set_url("http://127.0.0.1:9/auth-table");
         req.add_events("order.*");
         webhooks::v1::Webhook resp;
         grpc::ClientContext ctx;
         As(&ctx, w);
         return hooks_stub_->RegisterWebhook(&ctx, req, &resp);
       }},
  };
  struct Row {
    std::string call;
    std::map<std::string, StatusCode> expect;  // principal -> code
  };
  const std::vector<Row> table = {
      {"broker.Publish(order.created)",
       {{"", UNAUTH},
        {"bogus", UNAUTH},
        {"checkout", OK},
        {"tracker", DENIED},
        {"root", OK},
        {"hooks-operator", DENIED}}},
      {"broker.Publish(user.created)", {{"checkout", DENIED}, {"root", OK}}},
      {"broker.PublishBatch(order.created,user.created)",
       {{"checkout", DENIED}, {"root", OK}, {"", UNAUTH}}},
      {"broker.Ack(billing)",
       {{"billing", ALLOWED}, {"tracker", ALLOWED}, {"checkout", DENIED}, {"", UNAUTH}}},
      {"broker.ListDeadLetters(billing)",
       {{"billing", ALLOWED}, {"checkout", DENIED}, {"jobs-operator", DENIED}, {"root", ALLOWED}}},
      {"broker.ReplayDeadLetters(billing)",
       {{"billing", DENIED}, {"tracker", DENIED}, {"root", ALLOWED}, {"bogus", UNAUTH}}},
      {"broker.GetStats", {{"tracker", OK}, {"checkout", OK}, {"", UNAUTH}}},
      {"broker.GetEventHistory", {{"tracker", OK}, {"jobs-reader", OK}, {"bogus", UNAUTH}}},
      {"broker.Nack(billing)", {{"billing", ALLOWED}, {"hooks-operator", DENIED}, {"", UNAUTH}}},
      {"broker.ModifyAckDeadline(billing)",
       {{"billing", ALLOWED}, {"checkout", DENIED}, {"", UNAUTH}}},
      {"jobs.GetStats", {{"jobs-reader", OK}, {"hooks-operator", DENIED}, {"", UNAUTH}}},
      {"jobs.GetJob", {{"jobs-reader", ALLOWED}, {"checkout", DENIED}, {"", UNAUTH}}},
      {"hooks.GetWebhook", {{"hooks-reader", ALLOWED}, {"jobs-operator", DENIED}, {"", UNAUTH}}},
      {"hooks.GetStats", {{"hooks-reader", OK}, {"tracker", DENIED}, {"", UNAUTH}}},
      {"hooks.ListDeliveries", {{"hooks-reader", OK}, {"checkout", DENIED}, {"", UNAUTH}}},
      {"hooks.UnregisterWebhook",
       {{"hooks-operator", ALLOWED}, {"hooks-reader", DENIED}, {"", UNAUTH}}},
      {"hooks.UpdateWebhook",
       {{"hooks-operator", ALLOWED}, {"hooks-reader", DENIED}, {"bogus", UNAUTH}}},
      {"hooks.RotateSecret", {{"root", ALLOWED}, {"hooks-reader", DENIED}, {"", UNAUTH}}},
      {"hooks.RedeliverEvent",
       {{"hooks-operator", ALLOWED}, {"hooks-reader", DENIED}, {"", UNAUTH}}},
      {"hooks.SendTestEvent",
       {{"hooks-operator", ALLOWED}, {"hooks-reader", DENIED}, {"", UNAUTH}}},
      {"jobs.ListJobs",
       {{"jobs-reader", OK},
        {"jobs-operator", OK},
        {"root", OK},
        {"checkout", DENIED},
        {"hooks-reader", DENIED},
        {"", UNAUTH},
        {"bogus", UNAUTH}}},
      {"jobs.PauseQueue(payments)",
       {{"jobs-operator", OK}, {"root", OK}, {"jobs-reader", DENIED}, {"", UNAUTH}}},
      {"hooks.ListWebhooks",
       {{"hooks-reader", OK}, {"hooks-operator", OK}, {"jobs-reader", DENIED}, {"", UNAUTH}}},
      {"hooks.RegisterWebhook",
       {{"hooks-operator", OK},
        {"root", OK},
        {"hooks-reader", DENIED},
        {"checkout", DENIED},
        {"", UNAUTH}}},
  };
  for (const Row& row : table) {
    for (const auto& [who, want] : row.expect) {
      grpc::Status got = calls.at(row.call)(who);
      std::string label = absl::StrCat(row.call, " as '", who, "': ", got.error_message());
      if (want == ALLOWED) {
        EXPECT_NE(got.error_code(), UNAUTH) << label;
        EXPECT_NE(got.error_code(), DENIED) << label;
      } else {
        EXPECT_EQ(got.error_code(), want) << label;
      }
      if (want == DENIED) {
        EXPECT_THAT(got.error_message(), ::testing::HasSubstr("lacks scope '")) << label;
      }
      // Tokens never come back in errors.
      EXPECT_THAT(got.error_message(), ::testing::Not(::testing::HasSubstr("tok-"))) << label;
    }
  }
  // The refusal names the scope that is missing.
  grpc::Status s = Publish("checkout", "user.created");
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("lacks scope 'publish:user.created'"));

  // Subscriptions: types and groups.
  EXPECT_EQ(Subscribe("tracker", {"order.*"}), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Subscribe("tracker", {"order.created"}, "any-group"), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Subscribe("tracker", {"*"}), DENIED);
  EXPECT_EQ(Subscribe("tracker", {}), DENIED);
  EXPECT_EQ(Subscribe("tracker", {"order.*", "user.*"}), DENIED);
  EXPECT_EQ(Subscribe("billing", {"order.*"}, "billing"), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Subscribe("billing", {"order.*"}, "shipping"), DENIED);
  EXPECT_EQ(Subscribe("billing", {"order.*"}), DENIED);
  EXPECT_EQ(Subscribe("checkout", {"order.*"}), DENIED);
  EXPECT_EQ(Subscribe("", {"order.*"}), UNAUTH);
  EXPECT_EQ(Subscribe("root", {}), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Subscribe("tracker", {"order.*"}, "", /*batched=*/true), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Subscribe("tracker", {"user.*"}, "", /*batched=*/true), DENIED);
  EXPECT_EQ(Subscribe("", {"order.*"}, "", /*batched=*/true), UNAUTH);

  // Refusals are counted by reason and method; no token is in any log or metric.
  auto metrics = HttpRequest(broker_->http_addr(), "GET", "/metrics");
  EXPECT_THAT(
      metrics.body,
      ::testing::HasSubstr(
          R"(switchboard_broker_auth_failures_total{method="Publish",reason="permission_denied"})"));
  EXPECT_THAT(
      metrics.body,
      ::testing::HasSubstr(
          R"(switchboard_broker_auth_failures_total{method="Subscribe",reason="unauthenticated"})"));
  for (auto* p : {broker_.get(), worker_.get(), hooks_.get()}) {
    EXPECT_THAT(p->Log(), ::testing::Not(::testing::HasSubstr("tok-")));
    EXPECT_THAT(HttpRequest(p->http_addr(), "GET", "/metrics").body,
                ::testing::Not(::testing::HasSubstr("tok-")));
  }
}

TEST_F(AuthIT, HistoryAndStatsShowOnlyTypesThePrincipalMaySubscribeTo) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  // Types the worker does not act on, so the history holds just these two.
  ASSERT_TRUE(Publish("root", "order.note_added", "vis-1").ok());
  ASSERT_TRUE(Publish("root", "user.signed_up", "vis-1").ok());
  auto history = [&](const std::string& who) {
    broker::v1::GetEventHistoryRequest req;
    req.set_correlation_id("vis-1");
    broker::v1::GetEventHistoryResponse resp;
    grpc::ClientContext ctx;
    As(&ctx, who);
    EXPECT_TRUE(broker_stub_->GetEventHistory(&ctx, req, &resp).ok());
    std::set<std::string> types;
    for (const auto& e : resp.events()) types.insert(e.type());
    return types;
  };
  EXPECT_EQ(history("root"), (std::set<std::string>{"order.note_added", "user.signed_up"}));
  EXPECT_EQ(history("tracker"), (std::set<std::string>{"order.note_added"}));
  EXPECT_TRUE(history("checkout").empty());

  auto stats = [&](const std::string& who) {
    broker::v1::GetStatsResponse resp;
    grpc::ClientContext ctx;
    As(&ctx, who);
    EXPECT_TRUE(broker_stub_->GetStats(&ctx, {}, &resp).ok());
    return resp;
  };
  auto groups = [](const broker::v1::GetStatsResponse& r) {
    std::set<std::string> names;
    for (const auto& g : r.groups()) names.insert(g.name());
    return names;
  };
  broker::v1::GetStatsResponse all = stats("root");
  EXPECT_EQ(groups(all), (std::set<std::string>{"job-worker", "webhook-delivery"}));
  broker::v1::GetStatsResponse tracker = stats("tracker");
  EXPECT_FALSE(tracker.recent_events().empty());
  for (const auto& e : tracker.recent_events()) {
    EXPECT_THAT(e.type(), ::testing::StartsWith("order."));
  }
  // A group-limited scope sees its group only; no subscribe scope, none.
  EXPECT_EQ(groups(stats("webhook-delivery")), (std::set<std::string>{"webhook-delivery"}));
  EXPECT_TRUE(groups(stats("checkout")).empty());
  EXPECT_TRUE(stats("checkout").recent_events().empty());
  EXPECT_GE(stats("checkout").total_events(), 2u) << "totals stay";
  // The same over JSON.
  auto json = HttpRequest(broker_->http_addr(), "GET", "/api/events/history?correlation_id=vis-1",
                          "", "Authorization: Bearer tok-tracker-19bd\r\n");
  EXPECT_EQ(json.status, 200);
  EXPECT_THAT(json.body, ::testing::HasSubstr("order.note_added"));
  EXPECT_THAT(json.body, ::testing::Not(::testing::HasSubstr("user.signed_up")));
}

TEST_F(AuthIT, TheJsonApiNeedsTokensAndScopesButProbesAndMetricsDoNot) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  auto bearer = [](const std::string& who) {
    return absl::StrCat("Authorization: Bearer ", TokenOf(who), "\r\n");
  };
  const std::string b = broker_->http_addr(), h = hooks_->http_addr();
  auto none = HttpRequest(b, "GET", "/api/events/stats");
  EXPECT_EQ(none.status, 401);
  EXPECT_THAT(none.head, ::testing::HasSubstr("WWW-Authenticate: Bearer"));
  EXPECT_EQ(HttpRequest(b, "GET", "/api/events/stats", "", bearer("bogus")).status, 401);
  EXPECT_EQ(HttpRequest(b, "GET", "/api/events/stats", "", bearer("tracker")).status, 200);
  EXPECT_EQ(HttpRequest(b, "GET", "/health/events").status, 401);
  EXPECT_EQ(HttpRequest(b, "GET", "/health/events", "", bearer("tracker")).status, 200);
  const std::string order = R"({"type":"order.created","source":"json"})";
  EXPECT_EQ(HttpRequest(b, "POST", "/api/events/test", order, bearer("checkout")).status, 200);
  auto denied = HttpRequest(b, "POST", "/api/events/test", order, bearer("tracker"));
  EXPECT_EQ(denied.status, 403);
  EXPECT_THAT(denied.body, ::testing::HasSubstr("publish:order.created"));
  EXPECT_EQ(HttpRequest(h, "GET", "/api/webhooks", "", bearer("hooks-reader")).status, 200);
  EXPECT_EQ(HttpRequest(h, "GET", "/api/webhooks/stats", "", bearer("hooks-reader")).status, 200);
  const std::string reg = R"({"url":"http://127.0.0.1:9/json","events":["order.*"]})";
  auto refused = HttpRequest(h, "POST", "/api/webhooks/register", reg, bearer("hooks-reader"));
  EXPECT_EQ(refused.status, 403);
  EXPECT_THAT(refused.body, ::testing::HasSubstr("webhooks:admin"));
  EXPECT_EQ(HttpRequest(h, "POST", "/api/webhooks/register", reg, bearer("hooks-operator")).status,
            201);
  EXPECT_EQ(HttpRequest(h, "GET", "/api/webhooks").status, 401);
  // Copies of the databases are the admin's alone, on every service.
  for (const auto& [addr, file] : std::vector<std::pair<std::string, std::string>>{
           {b, "events.db"}, {h, "deliveries.db"}, {worker_->http_addr(), "jobs.db"}}) {
    const std::string path = "/admin/backup/" + file;
    EXPECT_EQ(HttpRequest(addr, "GET", path).status, 401) << path;
    auto backup_refused = HttpRequest(addr, "GET", path, "", bearer("hooks-operator"));
    EXPECT_EQ(backup_refused.status, 403) << path;
    EXPECT_THAT(backup_refused.body, ::testing::HasSubstr("admin")) << path;
    EXPECT_EQ(HttpRequest(addr, "GET", path, "", bearer("root")).status, 200) << path;
  }
  for (const std::string& addr : {b, h, worker_->http_addr()}) {
    for (const char* open : {"/metrics", "/healthz", "/readyz"}) {
      EXPECT_EQ(HttpRequest(addr, "GET", open).status, 200) << addr << open;
    }
  }
  // gRPC health stays open for kubelet probes.
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(broker_->grpc_addr(), grpc::InsecureChannelCredentials()));
  grpc::health::v1::HealthCheckResponse serving;
  grpc::ClientContext health_ctx;
  EXPECT_TRUE(health->Check(&health_ctx, {}, &serving).ok());
  EXPECT_EQ(serving.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// The whole mesh with authentication on: the worker and webhook-delivery
// present their own tokens, an order runs to completion and its webhooks
// arrive. A token added to the file works without a restart.
TEST_F(AuthIT, TheMeshRunsTheOrderFlowWithTokensAndTheFileReloads) {
  ASSERT_NO_FATAL_FAILURE(StartMesh());
  auto receiver = ServiceProcess::Start(RECEIVER_BIN, {std::string("--secret=") + kSecret},
                                        absl::Seconds(30), /*grpc=*/false);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  webhooks::v1::RegisterWebhookRequest reg;
  reg.set_url(absl::StrCat("http://", (*receiver)->http_addr(), "/webhooks"));
  reg.add_events("order.*");
  reg.set_secret(kSecret);
  webhooks::v1::Webhook hook;
  grpc::ClientContext reg_ctx;
  As(&reg_ctx, "hooks-operator");
  grpc::Status registered = hooks_stub_->RegisterWebhook(&reg_ctx, reg, &hook);
  ASSERT_TRUE(registered.ok()) << registered.error_message();

  ASSERT_TRUE(Publish("checkout", "order.checkout_initiated", "auth-order-1").ok());
  auto received = [&] { return HttpRequest((*receiver)->http_addr(), "GET", "/received").body; };
  EXPECT_TRUE(WaitUntil([&] { return received().find("order.completed") != std::string::npos; },
                        absl::Seconds(30)))
      << received() << "\n"
      << worker_->Log() << "\n"
      << hooks_->Log();
  jobs::v1::ListJobsRequest list;
  list.set_correlation_id("auth-order-1");
  jobs::v1::ListJobsResponse jobs;
  grpc::ClientContext jobs_ctx;
  As(&jobs_ctx, "jobs-reader");
  ASSERT_TRUE(jobs_stub_->ListJobs(&jobs_ctx, list, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 4);

  // A new principal, written as a whole new file (renamed over the old).
  EXPECT_EQ(Publish("tok-late-88", "order.created").error_code(), UNAUTH);
  std::ofstream(tokens_ + ".new") << TokensFile(
      {absl::StrCat(R"({"principal":"late","token_sha256":")", Sha256Hex("tok-late-88"),
                    R"(","scopes":["publish:order.created"]})")});
  std::rename((tokens_ + ".new").c_str(), tokens_.c_str());
  EXPECT_TRUE(WaitUntil([&] { return Publish("tok-late-88", "order.created").ok(); },
                        absl::Seconds(15), absl::Milliseconds(250)));
  // A broken file keeps the principals that worked.
  std::ofstream(tokens_) << "{not json\n";
  EXPECT_TRUE(WaitUntil(
      [&] {
        EXPECT_TRUE(Publish("checkout", "order.created").ok());
        return broker_->Log().find("auth tokens file not reloaded") != std::string::npos;
      },
      absl::Seconds(15), absl::Milliseconds(250)));
  EXPECT_TRUE(Publish("checkout", "order.created").ok());
  EXPECT_TRUE(Publish("tok-late-88", "order.created").ok());
}

TEST_F(AuthIT, BadTokenFilesStopTheBinaryNamingTheLine) {
  struct Case {
    std::string line;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"{not json", "auth_tokens_file: line 2: not a JSON object"},
           {R"({"token_sha256":"00","scopes":[]})", "line 2: principal: required"},
           {R"({"principal":"x","token_sha256":"abc","scopes":[]})",
            "line 2: token_sha256: 64 hex"},
           {R"({"principal":"x","scopes":["admin"]})",
            "line 2: one of token_sha256 or tls_identity"},
           {absl::StrCat(R"({"principal":"x","token_sha256":")", Sha256Hex("t"),
                         R"(","scopes":["publish:Order"]})"),
            "line 2: scopes[0]: 'Order' is not a type pattern"},
           {absl::StrCat(R"({"principal":"x","token_sha256":")", Sha256Hex("t"),
                         R"(","scopes":["superuser"]})"),
            "line 2: scopes[0]: unknown scope 'superuser'"},
       }) {
    std::ofstream(tokens_) << "# comment\n" << c.line << "\n";
    for (const char* bin : {BROKER_BIN, WORKER_BIN, WEBHOOK_BIN}) {
      testing::ExitResult r =
          testing::RunToExit(bin,
                             {"--data_dir=" + dir_ + "/bad", "--auth_tokens_file=" + tokens_,
                              "--grpc_addr=127.0.0.1:0", "--http_addr=127.0.0.1:0"},
                             absl::Seconds(20));
      EXPECT_EQ(r.code, 2) << bin << "\n" << r.output;
      EXPECT_THAT(r.output, ::testing::HasSubstr(c.says)) << bin;
    }
  }
  testing::ExitResult r = testing::RunToExit(
      WORKER_BIN, {"--data_dir=" + dir_ + "/bad", "--broker_token_file=" + dir_ + "/missing"},
      absl::Seconds(20));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.output, ::testing::HasSubstr("broker_token_file: cannot read"));
}

// With mTLS a client certificate's identity (a SAN URI here) maps to a
// principal: a service inside the mesh needs no bearer token.
TEST_F(AuthIT, AClientCertificateIdentityMapsToAPrincipal) {
  auto ca = testing::MakeCa(dir_, "ca");
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto server = testing::MakeLeaf(*ca, dir_, "server", "broker", "DNS:localhost,IP:127.0.0.1");
  auto mapped =
      testing::MakeLeaf(*ca, dir_, "mapped", "publisher", "URI:spiffe://switchboard/checkout");
  auto unmapped = testing::MakeLeaf(*ca, dir_, "unmapped", "stranger", "DNS:stranger.example");
  ASSERT_TRUE(server.ok() && mapped.ok() && unmapped.ok());
  std::ofstream(tokens_) << TokensFile(
      {R"({"principal":"checkout-mtls","tls_identity":"spiffe://switchboard/checkout","scopes":["publish:order.*"]})"});
  auto b = ServiceProcess::Start(
      BROKER_BIN,
      {"--data_dir=" + dir_ + "/broker", "--auth_tokens_file=" + tokens_,
       "--tls_cert=" + server->cert, "--tls_key=" + server->key, "--tls_client_ca=" + ca->cert});
  ASSERT_TRUE(b.ok()) << b.status();
  auto publish = [&](const testing::CertFiles& cert, const std::string& who) {
    ClientTlsConfig tls;
    tls.enabled = true;
    tls.ca_file = ca->cert;
    tls.cert_file = cert.cert;
    tls.key_file = cert.key;
    auto stub = broker::v1::EventBroker::NewStub(
        grpc::CreateChannel((*b)->grpc_addr(), GrpcChannelCredentials(tls)));
    broker::v1::PublishRequest req;
    req.mutable_event()->set_type("order.created");
    req.mutable_event()->set_source("mtls");
    broker::v1::PublishResponse resp;
    grpc::ClientContext ctx;
    As(&ctx, who);
    return stub->Publish(&ctx, req, &resp);
  };
  grpc::Status ok = publish(*mapped, "");
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(publish(*unmapped, "").error_code(), UNAUTH);
  // A token wins over the certificate.
  EXPECT_EQ(publish(*mapped, "tracker").error_code(), DENIED);
  EXPECT_TRUE(publish(*unmapped, "checkout").ok());
}

}  // namespace
}  // namespace switchboard
