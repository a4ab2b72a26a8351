#include "services/event_broker/delivery_codec.h"

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

}  // namespace
}  // namespace switchboard::broker
