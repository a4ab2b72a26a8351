#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_BACKOFF_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_BACKOFF_H_

#include <cstdint>

#include "absl/time/time.h"

namespace switchboard::jobs {

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

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_BACKOFF_H_
