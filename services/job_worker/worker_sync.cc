// The worker's side of a shared store: global-concurrency slots, and the
// sync loop that follows paused queues, reports this worker's load and reads
// the deployment's stats.
#include "absl/strings/str_cat.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"
#include "services/job_worker/worker.h"

namespace switchboard::jobs {

bool Worker::TakeSlot(const std::string& name, Queue* q, const std::shared_ptr<Task>& task,
                      std::string* holder) {
  const uint32_t cap = q->settings.global_concurrency;
  if (cap == 0) return true;
  std::string id = task->job.id();
  std::string h = absl::StrCat(options_.worker_id, ":", id);
  absl::StatusOr<bool> got = store_->AcquireSlot(name, h, cap, clock_->Now(), options_.slot_lease);
  absl::MutexLock lock(&mu_);
  if (got.ok() && *got) {
    q->slot_holders.insert(h);
    *holder = std::move(h);
    return true;
  }
  if (!got.ok()) {
    LogWarn("taking a queue slot failed", {{"queue", name}, {"error", got.status().ToString()}});
  }
  // Back to the head of the queue; look again when a job arrives or shortly
  // (a slot frees when a job ends on any worker, or its lease runs out).
  q->active.erase(id);
  q->waiting.push_front(task);
  UpdateGauges(name, *q);
  q->work.WaitWithTimeout(&mu_, got.ok() ? absl::Milliseconds(50) : absl::Milliseconds(500));
  return false;
}

void Worker::SyncLoop() {
  SetThreadName("sb-jobs-sync");
  const absl::Duration report_ttl = std::max(absl::Seconds(2), 8 * options_.sync_every);
  for (uint64_t tick = 1;; ++tick) {
    std::map<std::string, QueueLoad> mine;
    std::map<std::string, std::vector<std::string>> holders;
    std::map<std::string, uint64_t> epochs;
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.sync_every)) return;
      for (const auto& [name, q] : queues_) {
        mine[name] =
            QueueLoad{q.waiting.size(), q.active.size(), q.processed, q.processing_ms_total};
        if (!q.slot_holders.empty()) {
          holders[name].assign(q.slot_holders.begin(), q.slot_holders.end());
        }
        epochs[name] = q.pause_epoch;
      }
    }
    absl::Time now = clock_->Now();
    if (tick % 4 == 0) {
      for (const auto& [name, h] : holders) {
        if (absl::Status s = store_->RenewSlots(name, h, now, options_.slot_lease); !s.ok()) {
          LogWarn("renewing queue slots failed", {{"queue", name}, {"error", s.ToString()}});
        }
      }
    }
    if (!store_->shared()) continue;
    absl::StatusOr<std::set<std::string>> paused = store_->PausedQueues();
    absl::Status reported = store_->ReportLoad(options_.worker_id, mine, now, report_ttl);
    auto counts = store_->CountByQueueAndStatus();
    auto retried = store_->RetriedByQueue();
    auto others = store_->OtherLoads(options_.worker_id, now);
    if (!reported.ok()) LogWarn("reporting load failed", {{"error", reported.ToString()}});
    absl::MutexLock lock(&mu_);
    if (paused.ok()) {
      for (auto& [name, q] : queues_) {
        bool p = paused->count(name) > 0;
        // A SetPaused since this sync read the store wins.
        if (p == q.paused || q.pause_epoch != epochs[name]) continue;
        q.paused = p;
        if (!p) q.work.SignalAll();
        LogInfo(p ? "queue paused (by another worker)" : "queue resumed (by another worker)",
                {{"queue", name}});
      }
    }
    if (counts.ok() && retried.ok() && others.ok()) {
      shared_.valid = true;
      shared_.counts = *std::move(counts);
      shared_.retried = *std::move(retried);
      shared_.others = *std::move(others);
    }
  }
}

}  // namespace switchboard::jobs
