#include "libs/common/ids.h"

#include <set>

#include "gtest/gtest.h"

namespace switchboard {
namespace {

TEST(IdsTest, UlidIsSortableAndUnique) {
  std::string prev = NewUlid();
  std::set<std::string> seen{prev};
  for (int i = 0; i < 10000; ++i) {
    std::string id = NewUlid();
    ASSERT_EQ(id.size(), 26u);
    ASSERT_LT(prev, id) << "ids made later must sort later";
    ASSERT_TRUE(seen.insert(id).second);
    prev = id;
  }
}

TEST(IdsTest, UlidEncodesTime) {
  std::string a = NewUlid(absl::FromUnixMillis(1000));
  std::string b = NewUlid(absl::FromUnixMillis(2000000000000));
  EXPECT_LT(a.substr(0, 10), b.substr(0, 10));
}

TEST(IdsTest, PrefixedId) {
  std::string id = NewId("evt");
  EXPECT_EQ(id.rfind("evt_", 0), 0u);
  EXPECT_EQ(id.size(), 30u);
}

// Derived ids (issue 14): deterministic, and of fixed length however long
// the chain that made them.
TEST(DeriveIdTest, DeterministicFixedLengthAndDistinct) {
  std::string job = DeriveId("job", {"evt_01J0000000000000000000000"});
  EXPECT_EQ(job, DeriveId("job", {"evt_01J0000000000000000000000"}));
  EXPECT_EQ(job.size(), 4u + 26u);
  std::string id = job;
  for (int depth = 0; depth < 20; ++depth) id = DeriveId("evt", {id, "payment-processing", "1"});
  EXPECT_EQ(id.size(), 4u + 26u) << "a chain of 20 derivations does not grow";
  EXPECT_NE(DeriveId("evt", {"ab", "c"}), DeriveId("evt", {"a", "bc"}));
  EXPECT_NE(DeriveId("evt", {job, "started.1"}), DeriveId("evt", {job, "started.2"}));
  for (char c : id.substr(4))
    EXPECT_NE(std::string("0123456789ABCDEFGHJKMNPQRSTVWXYZ").find(c), std::string::npos);
}

}  // namespace
}  // namespace switchboard
