#ifndef SWITCHBOARD_TESTS_TESTING_FLAG_CHECKS_H_
#define SWITCHBOARD_TESTS_TESTING_FLAG_CHECKS_H_

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/process.h"

namespace switchboard::testing {

// Flags a binary must refuse at start, and what its error must say.
struct BadFlags {
  std::vector<std::string> args;
  std::string says;
};

// Runs `binary` with `base` plus each case's flags: it must exit 2 (a bad
// flag) with `says` in its output, and never print `secret`.
inline void ExpectEachExitsTwoNamingTheFlag(const std::string& binary,
                                            const std::vector<std::string>& base,
                                            const std::vector<BadFlags>& cases,
                                            const std::string& secret) {
  for (const BadFlags& c : cases) {
    std::vector<std::string> args = base;
    args.insert(args.end(), c.args.begin(), c.args.end());
    ExitResult r = RunToExit(binary, args, absl::Seconds(20));
    EXPECT_EQ(r.code, 2) << c.args.back() << "\n" << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.args.back() << "\n" << r.output;
    EXPECT_EQ(r.output.find(secret), std::string::npos) << "a secret in the output";
  }
}

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_TESTING_FLAG_CHECKS_H_
