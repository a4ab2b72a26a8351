#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_LOCAL_SLOTS_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_LOCAL_SLOTS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard::jobs {

// Global-concurrency slots of a store that one worker owns (SQLite, the
// fake): leases in memory, the same rules as the shared store's script.
class LocalSlots {
 public:
  bool Acquire(const std::string& queue, const std::string& holder, uint32_t limit, absl::Time now,
               absl::Duration lease) {
    absl::MutexLock lock(&mu_);
    auto& held = slots_[queue];
    DropEndedLocked(held, now);
    auto it = held.find(holder);
    if (it == held.end() && held.size() >= limit) return false;
    held[holder] = now + lease;
    return true;
  }
  void Renew(const std::string& queue, const std::vector<std::string>& holders, absl::Time now,
             absl::Duration lease) {
    absl::MutexLock lock(&mu_);
    auto& held = slots_[queue];
    for (const std::string& h : holders) {
      auto it = held.find(h);
      if (it != held.end() && it->second > now) it->second = now + lease;
    }
  }
  void Release(const std::string& queue, const std::string& holder) {
    absl::MutexLock lock(&mu_);
    slots_[queue].erase(holder);
  }
  uint64_t Held(const std::string& queue, absl::Time now) {
    absl::MutexLock lock(&mu_);
    auto& held = slots_[queue];
    DropEndedLocked(held, now);
    return held.size();
  }

 private:
  static void DropEndedLocked(std::map<std::string, absl::Time>& held, absl::Time now) {
    for (auto it = held.begin(); it != held.end();) {
      it = it->second <= now ? held.erase(it) : std::next(it);
    }
  }

  absl::Mutex mu_;
  std::map<std::string, std::map<std::string, absl::Time>> slots_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_LOCAL_SLOTS_H_
