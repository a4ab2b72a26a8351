#include "libs/common/ids.h"

#include <set>
#include <string>
#include <vector>

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

// A ULID made by hand (NewUlid never goes back in time within a process).
std::string Ulid(int64_t ms, uint64_t random) {
  const char* digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  std::string out(26, '0');
  for (int i = 9; i >= 0; --i, ms >>= 5) out[i] = digits[ms & 31];
  for (int i = 25; i >= 10; --i, random >>= 5) out[i] = digits[random & 31];
  return out;
}

// Job ids follow their events' time, so the job store's key index grows at
// its end; ids that are not ULIDs are hashed as before.
TEST(DeriveOrderedIdTest, SortsLikeTheUlidsItIsDerivedFrom) {
  std::vector<std::string> derived;
  std::set<std::string> distinct;
  for (int64_t ms : {1000LL, 1001LL, 1700000000000LL, 1700000000001LL, 281474976710655LL}) {
    for (uint64_t r = 0; r < 500; ++r) {  // many in one millisecond: one time prefix
      std::string source = "evt_" + Ulid(ms, r * 7919);
      std::string id = DeriveOrderedId("job", source);
      EXPECT_EQ(id, DeriveOrderedId("job", source)) << "deterministic";
      ASSERT_EQ(id.size(), 4u + 26u);
      EXPECT_EQ(id.substr(4, 10), source.substr(4, 10)) << "the event's time first";
      EXPECT_EQ(id.substr(14), DeriveId("job", {source}).substr(4, 16));
      derived.push_back(id);
      distinct.insert(id);
    }
  }
  EXPECT_EQ(distinct.size(), derived.size());
  for (size_t i = 500; i < derived.size(); i += 500) {
    EXPECT_LT(derived[i - 1], derived[i]) << "a later millisecond sorts after";
  }
  std::string bare = Ulid(1700000000000LL, 1);
  EXPECT_EQ(DeriveOrderedId("job", bare).substr(4, 10), bare.substr(0, 10)) << "a bare ULID too";
}

TEST(DeriveOrderedIdTest, HashesIdsThatAreNotUlids) {
  std::string ulid = Ulid(1700000000000LL, 42);
  std::vector<std::string> sources = {
      "evt_A",
      "order-42",
      "",
      "evt_",
      "evt_" + ulid.substr(1),            // 25 characters
      "evt_" + ulid + "0",                // 27
      "evt_8" + ulid.substr(1),           // past 48 bits of time
      "evt_" + ulid.substr(0, 25) + "u",  // lower case
      "evt_" + ulid.substr(0, 25) + "I",  // not Crockford
  };
  for (const std::string& source : sources) {
    EXPECT_EQ(DeriveOrderedId("job", source), DeriveId("job", {source})) << source;
  }
  EXPECT_NE(DeriveOrderedId("job", "evt_" + ulid), DeriveId("job", {"evt_" + ulid}));
}

}  // namespace
}  // namespace switchboard
