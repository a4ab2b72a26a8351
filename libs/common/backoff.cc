#include "libs/common/backoff.h"

#include <algorithm>
#include <cmath>

namespace switchboard {

absl::Duration BackoffDelay(const BackoffPolicy& policy, uint32_t failed_attempt,
                            double unit_random) {
  double base_s =
      absl::ToDoubleSeconds(policy.initial) *
      std::pow(policy.multiplier, static_cast<double>(std::max(1u, failed_attempt) - 1));
  base_s = std::min(base_s, absl::ToDoubleSeconds(policy.max));
  double u = std::clamp(unit_random, 0.0, 1.0);
  return absl::Seconds(base_s * (1.0 - policy.jitter * u));
}

}  // namespace switchboard
