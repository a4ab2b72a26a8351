#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_TESTING_MEMORY_JOB_STORE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_TESTING_MEMORY_JOB_STORE_H_

#include <algorithm>
#include <map>
#include <memory>
#include <set>
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
  struct Record {
    v1::Job job;
    absl::Time updated;
    uint64_t order = 0;
  };
  // The data: stores made over one Backing see the same jobs (as workers
  // sharing Redis do).
  struct Backing {
    absl::Mutex mu;
    std::map<std::string, Record> jobs ABSL_GUARDED_BY(mu);
    uint64_t order ABSL_GUARDED_BY(mu) = 0;
    std::map<std::string, uint64_t> counters ABSL_GUARDED_BY(mu);
    std::map<std::string, uint64_t> retried ABSL_GUARDED_BY(mu);
    std::set<std::string> paused ABSL_GUARDED_BY(mu);
    std::map<std::string, std::pair<std::map<std::string, QueueLoad>, absl::Time>> loads
        ABSL_GUARDED_BY(mu);
    LocalSlots slots;
  };

  explicit MemoryJobStore(bool shared = false, absl::Duration retention = absl::Hours(24 * 7),
                          std::shared_ptr<Backing> backing = nullptr)
      : shared_(shared),
        retention_(retention),
        b_(backing != nullptr ? std::move(backing) : std::make_shared<Backing>()) {}

  const std::shared_ptr<Backing>& backing() const { return b_; }

  bool shared() const override { return shared_; }
  absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) override {
    absl::MutexLock lock(&b_->mu);
    auto it = b_->jobs.find(id);
    if (it == b_->jobs.end()) return std::optional<v1::Job>();
    return std::optional<v1::Job>(it->second.job);
  }
  absl::Status PutMany(const std::vector<v1::Job>& jobs) override {
    absl::MutexLock lock(&b_->mu);
    absl::Time now = absl::Now();
    for (auto it = b_->jobs.begin(); it != b_->jobs.end();) {
      it = it->second.updated < now - retention_ ? b_->jobs.erase(it) : std::next(it);
    }
    for (const v1::Job& job : jobs) {
      b_->jobs[job.id()] = Record{job, now, ++b_->order};
      if (job.status() == v1::JOB_STATUS_RETRY_SCHEDULED) ++b_->retried[job.queue()];
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::Job>> List(const JobQuery& q) override {
    absl::MutexLock lock(&b_->mu);
    std::vector<const Record*> hits;
    for (const auto& [id, r] : b_->jobs) {
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
    absl::MutexLock lock(&b_->mu);
    return ++b_->counters[name];
  }
  absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>> CountByQueueAndStatus() override {
    absl::MutexLock lock(&b_->mu);
    std::map<std::pair<std::string, int>, uint64_t> out;
    for (const auto& [id, r] : b_->jobs) ++out[{r.job.queue(), r.job.status()}];
    return out;
  }
  absl::StatusOr<std::map<std::string, uint64_t>> RetriedByQueue() override {
    absl::MutexLock lock(&b_->mu);
    return b_->retried;
  }
  absl::Status SetPaused(const std::string& queue, bool paused) override {
    absl::MutexLock lock(&b_->mu);
    if (paused) {
      b_->paused.insert(queue);
    } else {
      b_->paused.erase(queue);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::set<std::string>> PausedQueues() override {
    absl::MutexLock lock(&b_->mu);
    return b_->paused;
  }
  absl::StatusOr<bool> AcquireSlot(const std::string& queue, const std::string& holder,
                                   uint32_t limit, absl::Time now, absl::Duration lease) override {
    return b_->slots.Acquire(queue, holder, limit, now, lease);
  }
  absl::Status RenewSlots(const std::string& queue, const std::vector<std::string>& holders,
                          absl::Time now, absl::Duration lease) override {
    b_->slots.Renew(queue, holders, now, lease);
    return absl::OkStatus();
  }
  absl::Status ReleaseSlot(const std::string& queue, const std::string& holder) override {
    b_->slots.Release(queue, holder);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> SlotsHeld(const std::string& queue, absl::Time now) override {
    return b_->slots.Held(queue, now);
  }
  absl::Status ReportLoad(const std::string& worker_id,
                          const std::map<std::string, QueueLoad>& load, absl::Time now,
                          absl::Duration ttl) override {
    absl::MutexLock lock(&b_->mu);
    if (shared_) b_->loads[worker_id] = {load, now + ttl};
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, QueueLoad>> OtherLoads(const std::string& worker_id,
                                                              absl::Time now) override {
    absl::MutexLock lock(&b_->mu);
    std::map<std::string, QueueLoad> out;
    for (const auto& [w, report] : b_->loads) {
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
  const bool shared_;
  const absl::Duration retention_;
  const std::shared_ptr<Backing> b_;
};

}  // namespace switchboard::jobs::testing

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_TESTING_MEMORY_JOB_STORE_H_
