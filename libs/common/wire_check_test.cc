#include "libs/common/wire_check.h"

#include "gtest/gtest.h"
#include "switchboard/broker/v1/broker.pb.h"

namespace switchboard {
namespace {

TEST(Utf8Test, ValidatesSequences) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));  // surrogate
}

TEST(Utf8Test, ValidPrefixNeverCutsACharacterAndReplacesBadBytes) {
  const std::string s = "ab\xe2\x82\xac\xf0\x9f\x98\x80";  // a b euro smiley: 2+3+4 bytes
  EXPECT_EQ(ValidUtf8Prefix(s, 100), s);
  EXPECT_EQ(ValidUtf8Prefix(s, 9), s);
  EXPECT_EQ(ValidUtf8Prefix(s, 8), "ab\xe2\x82\xac");
  EXPECT_EQ(ValidUtf8Prefix(s, 5), "ab\xe2\x82\xac");
  EXPECT_EQ(ValidUtf8Prefix(s, 4), "ab");
  EXPECT_EQ(ValidUtf8Prefix(s, 2), "ab");
  EXPECT_EQ(ValidUtf8Prefix(s, 0), "");
  for (size_t n = 0; n <= s.size(); ++n) EXPECT_TRUE(IsValidUtf8(ValidUtf8Prefix(s, n))) << n;
  // Bytes that start no character (a lone continuation byte, 0xff, a
  // truncated sequence, an overlong form) become U+FFFD each.
  EXPECT_EQ(ValidUtf8Prefix("a\x80"
                            "b\xff"
                            "c\xe2\x82",
                            100),
            "a\xef\xbf\xbd"
            "b\xef\xbf\xbd"
            "c\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(ValidUtf8Prefix("\xc0\xaf", 100), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(ValidUtf8Prefix("a\xff", 3), "a") << "no room for the replacement";
}

// Serializes a message whose string fields may hold anything (protobuf only
// complains, it still writes the bytes).
std::string Wire(const google::protobuf::Message& m) {
  std::string out;
  m.SerializeToString(&out);
  return out;
}

TEST(FindInvalidUtf8Test, NamesNestedStructAndMapAndRepeatedFields) {
  broker::v1::PublishRequest req;
  req.mutable_event()->set_type("order.created");
  (*req.mutable_event()->mutable_data()->mutable_fields())["note"].set_string_value("ok");
  EXPECT_FALSE(FindInvalidUtf8(req.GetDescriptor(), Wire(req)).has_value());

  (*req.mutable_event()->mutable_data()->mutable_fields())["note"].set_string_value("bad\xff");
  auto path = FindInvalidUtf8(req.GetDescriptor(), Wire(req));
  ASSERT_TRUE(path.has_value());
  EXPECT_EQ(*path, "event.data.fields[\"note\"].string_value");

  broker::v1::PublishBatchRequest batch;
  batch.add_events()->set_type("order.created");
  (*batch.add_events()->mutable_metadata())["k"] = "\xfe";
  path = FindInvalidUtf8(batch.GetDescriptor(), Wire(batch));
  ASSERT_TRUE(path.has_value());
  EXPECT_EQ(*path, "events[1].metadata[\"k\"]");

  broker::v1::PublishRequest subject;
  subject.mutable_event()->set_subject("\xc3");
  path = FindInvalidUtf8(subject.GetDescriptor(), Wire(subject));
  ASSERT_TRUE(path.has_value());
  EXPECT_EQ(*path, "event.subject");
}

}  // namespace
}  // namespace switchboard
