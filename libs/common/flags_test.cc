#include "libs/common/flags.h"

#include <cstdlib>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, flags_test_dir, "default", "test flag");
ABSL_FLAG(int, flags_test_retries, 5, "test flag");

namespace switchboard {
namespace {

TEST(FlagsTest, EnvVarName) { EXPECT_EQ(EnvVarForFlag("data_dir"), "SWITCHBOARD_DATA_DIR"); }

TEST(FlagsTest, EnvSetsFlagAndAliasWorks) {
  setenv("SWITCHBOARD_FLAGS_TEST_DIR", "/from/env", 1);
  setenv("TEST_MAX_RETRIES", "9", 1);
  ASSERT_TRUE(ApplyEnvToFlags({{"TEST_MAX_RETRIES", "flags_test_retries"}}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_flags_test_dir), "/from/env");
  EXPECT_EQ(absl::GetFlag(FLAGS_flags_test_retries), 9);
  unsetenv("SWITCHBOARD_FLAGS_TEST_DIR");
  unsetenv("TEST_MAX_RETRIES");
}

TEST(FlagsTest, BadEnvValueNamesTheVariable) {
  setenv("SWITCHBOARD_FLAGS_TEST_RETRIES", "many", 1);
  absl::Status s = ApplyEnvToFlags();
  unsetenv("SWITCHBOARD_FLAGS_TEST_RETRIES");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("SWITCHBOARD_FLAGS_TEST_RETRIES"), std::string::npos) << s;
}

TEST(FlagsTest, DashesBecomeUnderscoresInNamesOnly) {
  char a0[] = "prog", a1[] = "--data-dir=/a-b", a2[] = "--sync", a3[] = "--", a4[] = "--x-y";
  char* argv[] = {a0, a1, a2, a3, a4};
  std::vector<std::string> storage;
  std::vector<char*> out = NormalizeFlagNames(5, argv, &storage);
  EXPECT_STREQ(out[1], "--data_dir=/a-b");
  EXPECT_STREQ(out[2], "--sync");
  EXPECT_STREQ(out[4], "--x-y");
}

}  // namespace
}  // namespace switchboard
