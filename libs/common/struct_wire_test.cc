#include "libs/common/struct_wire.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

// What protobuf's own parser says: the verdict CheckStructBytes must give.
bool ProtobufAccepts(const std::string& bytes) {
  Struct s;
  return s.ParseFromString(bytes);
}

// A Struct nested `levels` times through struct_value ({"a": {"a": ...}}),
// with a leaf whose own depth is `leaf` more messages (0: a number, 1: an
// empty object, 2: a list holding a number), so that the deepest message
// falls on each level, not only on every third.
Struct NestedStructMessage(int levels, int leaf = 0) {
  Struct inner;
  Value& v = (*inner.mutable_fields())["leaf"];
  if (leaf == 0) v.set_number_value(1);
  if (leaf == 1) v.mutable_struct_value();
  if (leaf == 2) v.mutable_list_value()->add_values()->set_number_value(1);
  for (int i = 0; i < levels; ++i) {
    Struct outer;
    *(*outer.mutable_fields())["a"].mutable_struct_value() = std::move(inner);
    inner = std::move(outer);
  }
  return inner;
}

std::string NestedStruct(int levels, int leaf = 0) {
  return NestedStructMessage(levels, leaf).SerializeAsString();
}

std::string VarintBytes(uint64_t v) {
  std::string out;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out.push_back(static_cast<char>(v != 0 ? (b | 0x80) : b));
  } while (v != 0);
  return out;
}

std::string Len(uint32_t field, const std::string& body) {
  return VarintBytes((field << 3) | 2) + VarintBytes(body.size()) + body;
}

// Valid encodings of many shapes, unknown fields and groups included: the
// seeds of the mutation test.
std::vector<std::string> Corpus() {
  std::vector<std::string> out;
  Struct order;
  auto& f = *order.mutable_fields();
  f["order_id"].set_string_value("ord_123");
  f["total"].set_number_value(129.5);
  f["paid"].set_bool_value(true);
  f["coupon"].set_null_value(google::protobuf::NULL_VALUE);
  f["note"].set_string_value("caf\xc3\xa9 \xf0\x9f\x98\x80");
  ListValue* items = f["items"].mutable_list_value();
  for (int i = 0; i < 3; ++i) {
    Struct* item = items->add_values()->mutable_struct_value();
    (*item->mutable_fields())["sku"].set_string_value("sku-" + std::to_string(i));
    (*item->mutable_fields())["qty"].set_number_value(i + 1);
  }
  items->add_values()->mutable_list_value()->add_values()->set_string_value("nested");
  out.push_back(order.SerializeAsString());
  out.push_back("");
  out.push_back(NestedStruct(5));
  // Unknown fields at each level: a varint, a fixed32, a fixed64, a string
  // and a group with a field inside.
  std::string unknown = std::string("\x18\x05", 2) + "\x25" + std::string(4, '\x01') + "\x39" +
                        std::string(8, '\x02') + Len(7, "xyz") + "\x43\x08\x01\x44";
  std::string value = std::string("\x11", 1) + std::string(8, '\0') + unknown;
  std::string entry = Len(1, "k") + Len(2, value) + unknown;
  out.push_back(Len(1, entry) + unknown);
  out.push_back(Len(1, Len(2, Len(6, Len(1, value) + unknown))));  // a list with unknowns
  return out;
}

// Protobuf logs each string with invalid UTF-8 it refuses.
class StructWireTest : public ::testing::Test {
 protected:
  google::protobuf::LogSilencer quiet_;
};

TEST_F(StructWireTest, AcceptsWhatProtobufParses) {
  for (const std::string& bytes : Corpus()) {
    ASSERT_TRUE(ProtobufAccepts(bytes)) << absl::CEscape(bytes);
    EXPECT_TRUE(CheckStructBytes(bytes).ok()) << absl::CEscape(bytes);
  }
}

TEST_F(StructWireTest, NamesTheStringWithInvalidUtf8) {
  Struct s;
  (*s.mutable_fields())["note"].set_string_value("bad \xff\xfe bytes");
  absl::Status st = CheckStructBytes(s.SerializeAsString());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "data.fields[\"note\"].string_value: invalid UTF-8");
  EXPECT_EQ(CheckStructBytes("\x0a", 0, "events[2].data").message(),
            "events[2].data: not a valid google.protobuf.Struct");

  Struct key;
  (*key.mutable_fields())["k\xc0\xaf"].set_bool_value(true);  // an overlong '/'
  st = CheckStructBytes(key.SerializeAsString());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ProtobufAccepts(key.SerializeAsString()));
}

TEST_F(StructWireTest, RefusesMalformedBytes) {
  for (const std::string& bad : {
           std::string("\x0a\x05\x0a\x01", 4),              // a length past the end
           std::string("\x0a", 1),                          // a tag and nothing
           std::string("\x00", 1),                          // tag 0
           std::string("\x0c", 1),                          // an end-group tag
           std::string("\x1b\x08\x01", 3),                  // a group never ended
           std::string("\x1b\x24", 2),                      // ended with another field's end
           std::string("\x0e", 1),                          // wire type 6
           std::string("\x02\x00", 2),                      // field number 0
           std::string("\x0a\x80\x80\x80\x80\x80\x00", 7),  // a 6-byte length
           std::string("\x0a\x80\x80\x80\x80\x08", 6),      // a length of 2 GiB
           std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12),  // 11 bytes
       }) {
    EXPECT_FALSE(ProtobufAccepts(bad)) << absl::CEscape(bad);
    EXPECT_FALSE(CheckStructBytes(bad).ok()) << absl::CEscape(bad);
  }
}

TEST_F(StructWireTest, KeepsProtobufsRecursionLimit) {
  int accepted_depth = -1;  // the deepest message protobuf accepted
  for (int levels = 29; levels <= 34; ++levels) {
    for (int leaf = 0; leaf <= 2; ++leaf) {
      std::string bytes = NestedStruct(levels, leaf);
      bool want = ProtobufAccepts(bytes);
      EXPECT_EQ(CheckStructBytes(bytes).ok(), want) << levels << " levels, leaf " << leaf;
      // The Struct is level 0; each level adds entry, Value, Struct.
      if (want) accepted_depth = std::max(accepted_depth, 3 * levels + 2 + leaf);
    }
  }
  EXPECT_EQ(accepted_depth, kProtobufRecursionLimit);
}

// The broker checks `data` as deep as a DeliveryBatch carries it (batch,
// delivery, event): what it accepts, every subscriber can parse.
TEST_F(StructWireTest, AnEventsDataIsCheckedAtItsDepthInADeliveryBatch) {
  int checked = 0;
  for (int levels = 28; levels <= 34; ++levels) {
    for (int leaf = 0; leaf <= 2; ++leaf) {
      broker::v1::DeliveryBatch batch;
      events::v1::Event* ev = batch.add_deliveries()->mutable_event();
      ev->set_type("order.created");
      *ev->mutable_data() = NestedStructMessage(levels, leaf);
      bool want = broker::v1::DeliveryBatch().ParseFromString(batch.SerializeAsString());
      std::string data = ev->data().SerializeAsString();
      EXPECT_EQ(CheckStructBytes(data, 3).ok(), want) << levels << " levels, leaf " << leaf;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 21);
}

// Random damage to valid encodings: every verdict must be protobuf's.
TEST_F(StructWireTest, AgreesWithProtobufOnDamagedBytes) {
  std::mt19937 rng(20261203);
  std::vector<std::string> corpus = Corpus();
  int refused = 0;
  for (int i = 0; i < 40000; ++i) {
    std::string bytes = corpus[rng() % corpus.size()];
    int edits = 1 + rng() % 3;
    for (int e = 0; e < edits; ++e) {
      size_t at = bytes.empty() ? 0 : rng() % bytes.size();
      switch (rng() % 5) {
        case 0:
          if (!bytes.empty()) bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          if (!bytes.empty()) bytes[at] ^= static_cast<char>(1 << (rng() % 8));
          break;
        case 2:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
        case 3:
          if (!bytes.empty()) bytes.erase(at, 1);
          break;
        case 4:
          bytes.resize(at);
          break;
      }
    }
    bool want = ProtobufAccepts(bytes);
    if (!want) ++refused;
    ASSERT_EQ(CheckStructBytes(bytes).ok(), want)
        << "protobuf " << (want ? "accepts" : "refuses") << " " << absl::CEscape(bytes);
  }
  EXPECT_GT(refused, 10000);  // the damage reaches the refusing paths
}

}  // namespace
}  // namespace switchboard
