// The finisher: what the queue threads ran is published, recorded and acked
// here, many jobs per round, so no queue thread waits on the broker or the
// store and each round costs one publish batch, one store write and one ack
// call however many jobs it holds.
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"
#include "services/job_worker/worker.h"

namespace switchboard::jobs {
namespace {

// Jobs per round: enough to amortise the round's calls, few enough that one
// round's publish stays one batch of the publisher (1000 events).
constexpr size_t kMaxRound = 200;

}  // namespace

void Worker::FinishLoop() {
  SetThreadName("sb-finish");
  while (true) {
    std::vector<Finished> batch;
    {
      absl::MutexLock lock(&finish_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(finish_mu_) {
        return !to_finish_.empty() || finish_stop_;
      };
      finish_mu_.Await(absl::Condition(&ready));
      if (to_finish_.empty()) return;  // stopping, and everything was finished
      if (to_finish_.size() <= kMaxRound) {
        batch.swap(to_finish_);
      } else {
        batch.assign(std::make_move_iterator(to_finish_.begin()),
                     std::make_move_iterator(to_finish_.begin() + kMaxRound));
        to_finish_.erase(to_finish_.begin(), to_finish_.begin() + kMaxRound);
      }
    }
    FinishBatch(std::move(batch));
  }
}

void Worker::FinishBatch(std::vector<Finished> batch) {
  // 1. The completed jobs' events, each job's whole or not at all: one
  // refused event fails only its own job.
  std::vector<size_t> publishing;
  std::vector<EncodedEvents> submissions;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].outcome != "completed") continue;
    publishing.push_back(i);
    submissions.push_back(std::move(batch[i].events));
  }
  std::vector<absl::Status> published = publisher_->PublishEach(std::move(submissions));
  for (size_t k = 0; k < publishing.size(); ++k) {
    if (published[k].ok()) continue;
    // The work is done but its events are not out: let the broker redeliver
    // (the re-run's events carry the same ids).
    Finished& f = batch[publishing[k]];
    LogError("publishing job results failed",
             {{"job_id", f.job.id()}, {"error", published[k].ToString()}});
    f.job.set_attempt(f.job.attempt() - 1);
    f.ack = false;
    f.nack_delay = absl::Seconds(1);
    f.nack_reason = absl::StrCat("publishing the job's events failed: ", published[k].message());
    f.outcome = "publish_failed";
  }

  // 2. Record first, then tell the world: a crash in between re-runs the
  // job (at-least-once), never loses it.
  std::vector<v1::Job> records;
  for (const Finished& f : batch) {
    if (f.outcome != "publish_failed") records.push_back(f.job);
  }
  absl::Status recorded = store_->PutMany(records);
  if (!recorded.ok()) {
    LogError("job store write failed",
             {{"jobs", static_cast<uint64_t>(records.size())}, {"error", recorded.ToString()}});
  }
  std::vector<EncodedEvents> failures;
  std::vector<const Finished*> failed_jobs;
  for (Finished& f : batch) {
    if (f.outcome == "publish_failed") continue;
    if (!recorded.ok()) {
      f.ack = false;
      f.nack_delay = absl::Seconds(1);
      f.nack_reason = absl::StrCat("recording the job failed: ", recorded.message());
    } else if (f.outcome != "completed") {
      WireEvent failed =
          LifecycleEvent(*f.task, f.job, "job.failed", absl::StrCat("failed.", f.job.attempt()));
      failed.Data("final", f.job.status() == v1::JOB_STATUS_FAILED);
      failures.push_back(Encoded(failed));
      failed_jobs.push_back(&f);
    }
  }
  // Out before the ack: a final job.failed is not lost to a crash.
  std::vector<absl::Status> told = publisher_->PublishEach(std::move(failures));
  for (size_t k = 0; k < told.size(); ++k) {
    if (!told[k].ok()) {
      LogWarn("publishing job.failed failed",
              {{"job_id", failed_jobs[k]->job.id()}, {"error", told[k].ToString()}});
    }
  }

  // 3. Counts, then the acks in one call and the nacks.
  std::map<std::tuple<std::string, std::string, std::string>, double> outcomes;
  std::vector<std::string> acks;
  std::vector<std::pair<std::string, const Finished*>> nacks;
  {
    absl::MutexLock lock(&mu_);
    std::set<Queue*> touched;
    for (const Finished& f : batch) {
      Queue* q = f.queue;
      f.task->job = f.job;
      q->finishing.erase(f.job.id());
      held_.erase(f.job.id());
      if (f.outcome == "completed") q->completed++;
      if (f.outcome == "failed") q->failed++;
      if (f.outcome == "retried") q->retried++;
      q->processed++;
      q->processing_ms_total += absl::ToDoubleMilliseconds(f.took);
      touched.insert(q);
      if (f.ack) {
        acks.push_back(f.task->ack_id);
      } else {
        nacks.emplace_back(f.task->ack_id, &f);
      }
    }
    for (Queue* q : touched) UpdateGauges(q->settings.name, *q);
  }
  for (const Finished& f : batch) outcomes[{f.job.queue(), f.job.type(), f.outcome}] += 1;
  for (const auto& [key, n] : outcomes) {
    const auto& [queue, type, outcome] = key;
    metrics_->jobs.Add({{"queue", queue}, {"type", type}, {"outcome", outcome}}).Increment(n);
  }
  acker_->AckMany(std::move(acks));
  for (const auto& [ack_id, f] : nacks) Nack(ack_id, f->nack_delay, f->nack_reason);
}

}  // namespace switchboard::jobs
