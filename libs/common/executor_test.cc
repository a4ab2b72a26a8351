#include "libs/common/executor.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace switchboard {
namespace {

TEST(ExecutorTest, RunsTasksAndRefusesPastItsQueue) {
  absl::Notification release;
  std::atomic<int> ran{0};
  {
    Executor ex("test-exec", 1, 2);
    // The one thread takes the first task and blocks in it.
    absl::Notification started;
    ASSERT_TRUE(ex.Submit([&] {
      started.Notify();
      release.WaitForNotification();
      ++ran;
    }));
    started.WaitForNotification();
    EXPECT_TRUE(ex.Submit([&] { ++ran; }));
    EXPECT_TRUE(ex.Submit([&] { ++ran; }));
    EXPECT_FALSE(ex.Submit([&] { ++ran; })) << "a full queue refuses, it does not grow";
    release.Notify();
  }  // the destructor runs what was queued, then joins
  EXPECT_EQ(ran.load(), 3);
}

}  // namespace
}  // namespace switchboard
