#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_TESTING_MEMORY_JOB_STORE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_TESTING_MEMORY_JOB_STORE_H_

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "services/job_worker/job_store.h"
#include "services/job_worker/local_slots.h"

namespace switchboard::jobs::testing {

// JobStore in memory, for unit tests of the worker's logic. Held to the same
// contract as the real stores by the conformance suite. `shared` makes it
// behave as a store several workers share (loads are kept and summed).
class MemoryJobStore : public JobStore {
 public:
  explicit MemoryJobStore(bool shared = false, absl::Duration retention = absl::Hours(24 * 7))
      : shared_(shared), retention_(retention) {}

  bool shared() const override { return shared_; }
  absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return std::optional<v1::Job>();
    return std::optional<v1::Job>(it->second.job);
  }
  absl::Status Put(const v1::Job& job) override {
    absl::MutexLock lock(&mu_);
    absl::Time now = absl::Now();
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      it = it->second.updated < now - retention_ ? jobs_.erase(it) : std::next(it);
    }
    jobs_[job.id()] = Record{job, now, ++order_};
    if (job.status() == v1::JOB_STATUS_RETRY_SCHEDULED) ++retried_[job.queue()];
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::Job>> List(const JobQuery& q) override {
    absl::MutexLock lock(&mu_);
    std::vector<const Record*> hits;
    for (const auto& [id, r] : jobs_) {
      if (!q.queue.empty() && r.job.queue() != q.queue) continue;
      if (q.status != v1::JOB_STATUS_UNSPECIFIED && r.job.status() != q.status) continue;
      if (!q.correlation_id.empty() && r.job.correlation_id() != q.correlation_id) continue;
      hits.push_back(&r);
    }
    std::sort(hits.begin(), hits.end(),
              [](const Record* a, const Record* b) { return a->order > b->order; });
    std::vector<v1::Job> out;
    for (size_t i = 0; i < hits.size() && i < q.limit; ++i) out.push_back(hits[i]->job);
    return out;
  }
  absl::StatusOr<uint64_t> NextCounter(const std::string& name) override {
    absl::MutexLock lock(&mu_);
    return ++counters_[name];
  }
  absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>> CountByQueueAndStatus() override {
    absl::MutexLock lock(&mu_);
    std::map<std::pair<std::string, int>, uint64_t> out;
    for (const auto& [id, r] : jobs_) ++out[{r.job.queue(), r.job.status()}];
    return out;
  }
  absl::StatusOr<std::map<std::string, uint64_t>> RetriedByQueue() override {
    absl::MutexLock lock(&mu_);
    return retried_;
  }
  absl::Status SetPaused(const std::string& queue, bool paused) override {
    absl::MutexLock lock(&mu_);
    if (paused) {
      paused_.insert(queue);
    } else {
      paused_.erase(queue);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::set<std::string>> PausedQueues() override {
    absl::MutexLock lock(&mu_);
    return paused_;
  }
  absl::StatusOr<bool> AcquireSlot(const std::string& queue, const std::string& holder,
                                   uint32_t limit, absl::Time now, absl::Duration lease) override {
    return slots_.Acquire(queue, holder, limit, now, lease);
  }
  absl::Status RenewSlots(const std::string& queue, const std::vector<std::string>& holders,
                          absl::Time now, absl::Duration lease) override {
    slots_.Renew(queue, holders, now, lease);
    return absl::OkStatus();
  }
  absl::Status ReleaseSlot(const std::string& queue, const std::string& holder) override {
    slots_.Release(queue, holder);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> SlotsHeld(const std::string& queue, absl::Time now) override {
    return slots_.Held(queue, now);
  }
  absl::Status ReportLoad(const std::string& worker_id,
                          const std::map<std::string, QueueLoad>& load, absl::Time now,
                          absl::Duration ttl) override {
    absl::MutexLock lock(&mu_);
    if (shared_) loads_[worker_id] = {load, now + ttl};
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, QueueLoad>> OtherLoads(const std::string& worker_id,
                                                              absl::Time now) override {
    absl::MutexLock lock(&mu_);
    std::map<std::string, QueueLoad> out;
    for (const auto& [w, report] : loads_) {
      if (w == worker_id || report.second <= now) continue;
      for (const auto& [queue, l] : report.first) {
        QueueLoad& sum = out[queue];
        sum.waiting += l.waiting;
        sum.active += l.active;
        sum.processed += l.processed;
        sum.processing_ms_total += l.processing_ms_total;
      }
    }
    return out;
  }

 private:
  struct Record {
    v1::Job job;
    absl::Time updated;
    uint64_t order = 0;
  };
  const bool shared_;
  const absl::Duration retention_;
  absl::Mutex mu_;
  std::map<std::string, Record> jobs_ ABSL_GUARDED_BY(mu_);
  uint64_t order_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> counters_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> retried_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> paused_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::pair<std::map<std::string, QueueLoad>, absl::Time>> loads_
      ABSL_GUARDED_BY(mu_);
  LocalSlots slots_;
};

}  // namespace switchboard::jobs::testing

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_TESTING_MEMORY_JOB_STORE_H_
