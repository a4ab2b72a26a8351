// The hand-written wire form must parse to exactly the Event protobuf would
// have built: the broker, every subscriber and every webhook see the same
// job.* payloads either way.
#include "libs/broker_client/event_wire.h"

#include <cmath>
#include <limits>
#include <string>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard {
namespace {

using google::protobuf::util::MessageDifferencer;

events::v1::Event Parse(const std::string& bytes) {
  events::v1::Event ev;
  EXPECT_TRUE(ev.ParseFromString(bytes));
  return ev;
}

TEST(WireEventTest, ParsesToTheEventProtobufBuilds) {
  std::string long_text(20000, 'x');  // a three-byte length
  std::string mid_text(200, 'y');     // a two-byte length
  WireEvent w;
  w.id("evt_01").type("job.completed").source("job-worker").subject("order-7");
  w.correlation_id("corr-€").user_id("");
  w.Data("workerId", "w1")
      .Data("empty", "")
      .Data("attempt", 1.0)
      .Data("zero", 0.0)
      .Data("negative", -2.5)
      .Data("big", 1e300)
      .Data("final", true)
      .Data("notFinal", false)
      .Data("schlüssel", mid_text)
      .Data("long", long_text);

  events::v1::Event want;
  want.set_id("evt_01");
  want.set_type("job.completed");
  want.set_source("job-worker");
  want.set_subject("order-7");
  want.set_correlation_id("corr-€");
  auto& f = *want.mutable_data()->mutable_fields();
  f["workerId"].set_string_value("w1");
  f["empty"].set_string_value("");
  f["attempt"].set_number_value(1);
  f["zero"].set_number_value(0);
  f["negative"].set_number_value(-2.5);
  f["big"].set_number_value(1e300);
  f["final"].set_bool_value(true);
  f["notFinal"].set_bool_value(false);
  f["schlüssel"].set_string_value(mid_text);
  f["long"].set_string_value(long_text);

  events::v1::Event got = Parse(w.Finish());
  std::string diff;
  MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  EXPECT_TRUE(d.Compare(want, got)) << diff;
  // A zero and an empty string are still there, with their kind.
  EXPECT_EQ(got.data().fields().at("zero").kind_case(), google::protobuf::Value::kNumberValue);
  EXPECT_EQ(got.data().fields().at("empty").kind_case(), google::protobuf::Value::kStringValue);
  EXPECT_EQ(got.data().fields().at("notFinal").kind_case(), google::protobuf::Value::kBoolValue);
}

TEST(WireEventTest, AnEventWithNoDataStillHasAnEmptyStruct) {
  events::v1::Event got = Parse(WireEvent().id("evt_2").type("t").Finish());
  EXPECT_TRUE(got.has_data());
  EXPECT_EQ(got.data().fields_size(), 0);
  EXPECT_EQ(got.id(), "evt_2");
}

TEST(WireEventTest, SpecialNumbersKeepTheirBits) {
  for (double v : {std::numeric_limits<double>::infinity(), -0.0,
                   std::numeric_limits<double>::denorm_min(), 123456789.125}) {
    events::v1::Event got = Parse(WireEvent().Data("n", v).Finish());
    double back = got.data().fields().at("n").number_value();
    EXPECT_EQ(std::signbit(back), std::signbit(v));
    EXPECT_EQ(back, v);
  }
}

TEST(EncodedEventsTest, IsTheWireOfAPublishBatchRequest) {
  EncodedEvents a;
  events::v1::Event no_id;
  no_id.set_type("order.created");
  (*no_id.mutable_data()->mutable_fields())["total"].set_number_value(12);
  a.Add(no_id);
  a.AddSerialized(WireEvent().id("evt_w").type("job.started").Finish());
  EncodedEvents b;
  events::v1::Event with_id;
  with_id.set_id("evt_keep");
  with_id.set_type("job.enqueued");
  b.Add(with_id);
  a.Append(b);
  ASSERT_EQ(a.count(), 3u);

  broker::v1::PublishBatchRequest req;
  ASSERT_TRUE(req.ParseFromString(a.wire()));
  ASSERT_EQ(req.events_size(), 3);
  EXPECT_EQ(req.events(0).type(), "order.created");
  EXPECT_EQ(req.events(0).id().rfind("evt_", 0), 0u) << "an id was given";
  EXPECT_EQ(req.events(0).data().fields().at("total").number_value(), 12);
  EXPECT_EQ(req.events(1).id(), "evt_w");
  EXPECT_EQ(req.events(2).id(), "evt_keep");
  EXPECT_TRUE(EncodedEvents().empty());
}

}  // namespace
}  // namespace switchboard
