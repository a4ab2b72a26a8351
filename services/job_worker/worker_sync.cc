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
  // One name per run: a retry of this job, or a worker given the same
  // --worker_id, never shares (and later releases) this run's slot.
  std::string h = absl::StrCat(options_.worker_id, ":", slot_nonce_, ":", ++slot_runs_, ":", id);
  absl::StatusOr<bool> got = store_->AcquireSlot(name, h, cap, clock_->Now(), options_.slot_lease);
  bool give_back = false;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      // Shutdown handed this job back while it waited for a slot (it was
      // active then): another worker runs it, not this one.
      q->active.erase(id);
      held_.erase(id);
      UpdateGauges(name, *q);
      give_back = got.ok() && *got;
    } else if (got.ok() && *got) {
      q->slot_holders.insert(h);
      *holder = std::move(h);
      return true;
    } else {
      if (!got.ok()) {
        LogWarn("taking a queue slot failed",
                {{"queue", name}, {"error", got.status().ToString()}});
      }
      // Back to the head of the queue (Shutdown, not yet past its drain,
      // finds it there); look again when a job arrives or shortly (a slot
      // frees when a job ends on any worker, or its lease runs out).
      q->active.erase(id);
      q->waiting.push_front(task);
      UpdateGauges(name, *q);
      q->work.WaitWithTimeout(&mu_, got.ok() ? absl::Milliseconds(50) : absl::Milliseconds(500));
      return false;
    }
  }
  if (give_back) store_->ReleaseSlot(name, h).IgnoreError();  // else its lease ends it
  return false;
}

void Worker::SyncLoop() {
  SetThreadName("sb-jobs-sync");
  const absl::Duration report_ttl = std::max(absl::Seconds(2), 8 * options_.sync_every);
  // Renewed on elapsed time, first thing each pass, so slow store calls
  // later in a pass delay a renewal by one pass at most.
  const absl::Duration renew_every = options_.slot_lease / 4;
  absl::Time last_renew = clock_->Now();
  for (bool first = true;; first = false) {
    std::map<std::string, QueueLoad> mine;
    std::map<std::string, std::vector<std::string>> holders;
    std::map<std::string, uint64_t> epochs;
    {
      absl::MutexLock lock(&mu_);
      // The first pass runs at once: a worker starting while its queues are
      // held paused learns the deployment's state before anything runs.
      if (!first && mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.sync_every)) return;
      if (stopping_) return;
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
    if (now - last_renew >= renew_every) {
      last_renew = now;
      for (const auto& [name, h] : holders) {
        if (absl::Status s = store_->RenewSlots(name, h, now, options_.slot_lease); !s.ok()) {
          LogWarn("renewing queue slots failed", {{"queue", name}, {"error", s.ToString()}});
        }
      }
    }
    if (!store_->shared()) continue;
    // Each call checks for shutdown first: with Redis down each may take
    // the whole --redis_timeout.
    auto stop = [this] { return stopping_flag_.load(std::memory_order_relaxed); };
    absl::StatusOr<std::set<std::string>> paused = store_->PausedQueues();
    if (stop()) return;
    absl::Status reported = store_->ReportLoad(options_.worker_id, mine, now, report_ttl);
    if (!reported.ok()) LogWarn("reporting load failed", {{"error", reported.ToString()}});
    if (stop()) return;
    auto counts = store_->CountByQueueAndStatus();
    if (stop()) return;
    auto retried = store_->RetriedByQueue();
    if (stop()) return;
    auto others = store_->OtherLoads(options_.worker_id, now);
    absl::MutexLock lock(&mu_);
    if (paused.ok()) {
      for (auto& [name, q] : queues_) {
        bool p = paused->count(name) > 0;
        // A SetPaused since this sync read the store wins; until the first
        // read succeeded every queue is held paused (Start), and that read
        // decides.
        if (p == q.paused || (synced_ && q.pause_epoch != epochs[name])) continue;
        q.paused = p;
        if (!p) q.work.SignalAll();
        if (synced_) {
          LogInfo(p ? "queue paused (by another worker)" : "queue resumed (by another worker)",
                  {{"queue", name}});
        }
      }
      synced_ = true;
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
