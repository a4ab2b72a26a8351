#ifndef SWITCHBOARD_LIBS_COMMON_BACKOFF_H_
#define SWITCHBOARD_LIBS_COMMON_BACKOFF_H_

#include <cstdint>

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace switchboard {

// Exponential backoff with jitter, the one schedule every retry loop uses:
// job retries, webhook delivery attempts, broker client reconnects and
// publish retries.
struct BackoffPolicy {
  absl::Duration initial = absl::Seconds(1);
  double multiplier = 2.0;
  absl::Duration max = absl::Seconds(30);
  // Fraction of each delay that is random: the delay lies in
  // [base * (1 - jitter), base].
  double jitter = 0.2;
};

// The wait before the next attempt after `failed_attempt` (1-based) failed.
// `unit_random` in [0, 1) picks the jitter, so tests can pin it.
absl::Duration BackoffDelay(const BackoffPolicy& policy, uint32_t failed_attempt,
                            double unit_random);

// A retry loop's state: Next() is the wait after one more failure.
class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy) : policy_(policy) {}
  absl::Duration Next() {
    return BackoffDelay(policy_, ++failures_, absl::Uniform(gen_, 0.0, 1.0));
  }
  void Reset() { failures_ = 0; }
  uint32_t failures() const { return failures_; }

 private:
  BackoffPolicy policy_;
  uint32_t failures_ = 0;
  absl::BitGen gen_;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_COMMON_BACKOFF_H_
