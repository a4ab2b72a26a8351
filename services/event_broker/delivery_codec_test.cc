#include "services/event_broker/delivery_codec.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard::broker {
namespace {

TEST(DeliveryCodecTest, ParsesAsDelivery) {
  events::v1::Event ev;
  ev.set_id("evt_1");
  ev.set_type("order.created");
  (*ev.mutable_data()->mutable_fields())["total"].set_number_value(42.5);
  (*ev.mutable_metadata())["k"] = "v";
  StoredEvent stored;
  stored.seq = 300;  // a two-byte varint
  stored.type = ev.type();
  ev.SerializeToString(&stored.payload);

  std::string wire;
  EncodeDelivery(stored, 2, "300-2", &wire);
  v1::Delivery d;
  ASSERT_TRUE(d.ParseFromString(wire));
  EXPECT_EQ(d.event().id(), "evt_1");
  EXPECT_EQ(d.event().sequence(), 300u);
  EXPECT_EQ(d.event().data().fields().at("total").number_value(), 42.5);
  EXPECT_EQ(d.event().metadata().at("k"), "v");
  EXPECT_EQ(d.delivery_attempt(), 2u);
  EXPECT_EQ(d.ack_id(), "300-2");

  EncodeDelivery(stored, 1, "", &wire);
  ASSERT_TRUE(d.ParseFromString(wire));
  EXPECT_TRUE(d.ack_id().empty());
  EXPECT_EQ(d.delivery_attempt(), 1u);
  EXPECT_EQ(stored.Parse().sequence(), 300u);
}

TEST(DeliveryCodecTest, ConcatenatedBatchedDeliveriesParseAsDeliveryBatch) {
  std::string wire;
  size_t total = 0;
  for (uint64_t seq : {1u, 200u, 70000u}) {
    events::v1::Event ev;
    ev.set_type("order.created");
    ev.set_id(absl::StrCat("evt_", seq));
    StoredEvent stored;
    stored.seq = seq;
    ev.SerializeToString(&stored.payload);
    total += AppendBatchedDelivery(stored, seq == 200 ? 3 : 1,
                                   seq == 1 ? "" : absl::StrCat(seq, "-1"), &wire);
  }
  EXPECT_EQ(total, wire.size());
  v1::DeliveryBatch batch;
  ASSERT_TRUE(batch.ParseFromString(wire));
  ASSERT_EQ(batch.deliveries_size(), 3);
  EXPECT_EQ(batch.deliveries(0).event().id(), "evt_1");
  EXPECT_EQ(batch.deliveries(0).ack_id(), "");
  EXPECT_EQ(batch.deliveries(1).event().sequence(), 200u);
  EXPECT_EQ(batch.deliveries(1).delivery_attempt(), 3u);
  EXPECT_EQ(batch.deliveries(2).event().sequence(), 70000u);
  EXPECT_EQ(batch.deliveries(2).ack_id(), "70000-1");
}

}  // namespace
}  // namespace switchboard::broker
