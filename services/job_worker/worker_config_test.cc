// Worker configuration (file and defaults, validation naming the field),
// the retry backoff schedule and the order-flow handlers: logic without a
// worker running. (The worker's retry/ack protocol: job_worker_test.cc.)
#include "services/job_worker/worker_config.h"

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/common/backoff.h"
#include "services/job_worker/handlers.h"

namespace switchboard::jobs {
namespace {

using ::testing::HasSubstr;

TEST(BackoffTest, ExponentialCappedWithBoundedJitter) {
  BackoffPolicy p{absl::Seconds(1), 2.0, absl::Seconds(30), 0.0};
  std::vector<absl::Duration> got;
  for (uint32_t a = 1; a <= 7; ++a) got.push_back(BackoffDelay(p, a, 0.5));
  EXPECT_EQ(got, (std::vector<absl::Duration>{absl::Seconds(1), absl::Seconds(2), absl::Seconds(4),
                                              absl::Seconds(8), absl::Seconds(16),
                                              absl::Seconds(30), absl::Seconds(30)}));
  p.jitter = 0.2;
  for (double u : {0.0, 0.25, 0.5, 0.999}) {
    absl::Duration d = BackoffDelay(p, 3, u);
    EXPECT_LE(d, absl::Seconds(4));
    EXPECT_GE(d, absl::Seconds(4) * 0.8);
  }
  EXPECT_EQ(BackoffDelay(p, 3, 0.0), absl::Seconds(4));
  EXPECT_LE(BackoffDelay(p, 20, 0.0), absl::Seconds(30)) << "the cap holds with jitter";
}

std::vector<std::string> KnownTypes() {
  HandlerRegistry r;
  RegisterBuiltinHandlers(&r);
  return r.Types();
}

TEST(WorkerConfigTest, DefaultsRunTheOrderFlow) {
  auto c = ResolveWorkerConfig(v1::WorkerConfig(), KnownTypes());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->routes.size(), 5u);
  ASSERT_NE(c->Find("order.created"), nullptr);
  EXPECT_EQ(c->Find("order.created")->job_type, "payment-processing");
  EXPECT_EQ(c->Find("order.created")->queue, "payments");
  EXPECT_EQ(c->Find("cart.abandoned")->queue, "notifications");
  EXPECT_EQ(c->Find("order.completed"), nullptr);
  EXPECT_EQ(c->queues.size(), 4u);
  EXPECT_EQ(c->queues.at("payments").attempts, 3u);
}

TEST(WorkerConfigTest, FileMappingsAddToDefaultsAndQueuesOverride) {
  auto parsed = ParseWorkerConfig(R"({
    "mappings": [{"eventType": "test.flaky", "jobType": "flaky", "queue": "test"}],
    "queues": [{"name": "test", "concurrency": 2, "attempts": 4,
                "backoff": {"initial": "0.1s", "multiplier": 3, "max": "1s"}, "timeout": "5s"}],
    "paymentRule": {"failAboveTotal": 1000}
  })",
                                  "worker.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto c = ResolveWorkerConfig(*parsed, KnownTypes());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->routes.size(), 6u);
  EXPECT_EQ(c->queues.at("test").concurrency, 2u);
  EXPECT_EQ(c->queues.at("test").attempts, 4u);
  EXPECT_EQ(c->queues.at("test").backoff.initial, absl::Milliseconds(100));
  EXPECT_EQ(c->queues.at("test").backoff.multiplier, 3);
  EXPECT_EQ(c->queues.at("test").timeout, absl::Seconds(5));
  EXPECT_EQ(c->payment_rule.fail_above_total(), 1000);

  parsed->set_replace_default_mappings(true);
  c = ResolveWorkerConfig(*parsed, KnownTypes());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->routes.size(), 1u);
}

TEST(WorkerConfigTest, TextFormatToo) {
  auto parsed = ParseWorkerConfig(
      "queues { name: \"payments\" concurrency: 7 }\npayment_rule { fail_above_total: 5 }",
      "worker.textproto");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto c = ResolveWorkerConfig(*parsed, KnownTypes());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->queues.at("payments").concurrency, 7u);
}

TEST(WorkerConfigTest, UnknownKeysAreRejectedByName) {
  auto json =
      ParseWorkerConfig(R"({"queues": [{"name": "payments", "concurrensy": 3}]})", "w.json");
  ASSERT_FALSE(json.ok());
  EXPECT_THAT(json.status().message(), HasSubstr("concurrensy"));
  auto text = ParseWorkerConfig("queues { nmae: \"x\" }", "w.textproto");
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(text.status().message(), HasSubstr("nmae"));
}

TEST(WorkerConfigTest, BadValuesNameTheField) {
  struct Case {
    const char* json;
    const char* field;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"mappings":[{"eventType":"Order","jobType":"noop","queue":"q"}]})",
            "mappings[0].event_type"},
           {R"({"mappings":[{"eventType":"a.b","jobType":"nope","queue":"q"}]})",
            "mappings[0].job_type"},
           {R"({"mappings":[{"eventType":"a.b","jobType":"noop","queue":"Q Q"}]})",
            "mappings[0].queue"},
           {R"({"mappings":[{"eventType":"a.b","jobType":"noop","queue":"q"},
                            {"eventType":"a.b","jobType":"noop","queue":"q"}]})",
            "mappings[1].event_type"},
           {R"({"queues":[{"name":"ghost"}]})", "queues[0].name"},
           {R"({"queues":[{"name":"payments","concurrency":5000}]})", "queues[0].concurrency"},
           {R"({"queues":[{"name":"payments","attempts":500}]})", "queues[0].attempts"},
           {R"({"queues":[{"name":"payments","timeout":"-1s"}]})", "queues[0].timeout"},
           {R"({"queues":[{"name":"payments","backoff":{"multiplier":0.5}}]})",
            "queues[0].backoff.multiplier"},
           {R"({"queues":[{"name":"payments","backoff":{"jitter":2}}]})",
            "queues[0].backoff.jitter"},
           {R"({"queues":[{"name":"payments","backoff":{"initial":"10s","max":"1s"}}]})",
            "queues[0].backoff.max"},
           {R"({"paymentRule":{"failAboveTotal":-1}})", "payment_rule.fail_above_total"},
       }) {
    auto parsed = ParseWorkerConfig(c.json, "w.json");
    ASSERT_TRUE(parsed.ok()) << c.json << " " << parsed.status();
    auto r = ResolveWorkerConfig(*parsed, KnownTypes());
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_TRUE(absl::StartsWith(r.status().message(), c.field))
        << c.json << " -> " << r.status().message();
  }
}

TEST(HandlersTest, OrderCreationIsDeterministicAndPaymentRuleFails) {
  HandlerRegistry r;
  RegisterBuiltinHandlers(&r);
  events::v1::Event checkout;
  checkout.set_id("evt_01ABC");
  checkout.set_type("order.checkout_initiated");
  (*checkout.mutable_data()->mutable_fields())["customerId"].set_string_value("cus_1");
  (*checkout.mutable_data()->mutable_fields())["total"].set_number_value(250);
  v1::Job job;
  job.set_attempt(1);
  v1::PaymentRule rule;
  rule.set_fail_above_total(100);
  uint64_t counter = 41;
  JobContext ctx{checkout, job, absl::InfiniteFuture(), rule,
                 [&](const std::string&) -> absl::StatusOr<uint64_t> { return ++counter; }};
  auto out = r.Find("order-creation")->Run(ctx);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->events.size(), 1u);
  const events::v1::Event created = out->events[0];
  EXPECT_EQ(created.type(), "order.created");
  EXPECT_EQ(created.data().fields().at("orderId").string_value(), "ord_01ABC");
  EXPECT_EQ(created.data().fields().at("orderNumber").number_value(), 42);
  EXPECT_EQ(created.data().fields().at("status").string_value(), "created");
  EXPECT_EQ(created.subject(), "ord_01ABC");

  JobContext pay{created, job, absl::InfiniteFuture(), rule, ctx.next_counter};
  out = r.Find("payment-processing")->Run(pay);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->events.size(), 2u);
  EXPECT_EQ(out->events[0].type(), "order.payment_processing");
  EXPECT_EQ(out->events[1].type(), "order.payment_failed");
  rule.set_fail_above_total(0);
  out = r.Find("payment-processing")->Run(pay);
  EXPECT_EQ(out->events[1].type(), "order.payment_completed");
}

TEST(WorkerConfigTest, PriorityOutOfRangeNamesTheField) {
  HandlerRegistry r;
  RegisterBuiltinHandlers(&r);
  auto parsed = ParseWorkerConfig(
      R"({"mappings":[{"eventType":"test.x","jobType":"noop","queue":"q","priority":5000}]})",
      "w.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto c = ResolveWorkerConfig(*parsed, r.Types());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("mappings[0].priority"));
}

}  // namespace
}  // namespace switchboard::jobs
