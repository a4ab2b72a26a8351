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

}  // namespace
}  // namespace switchboard
