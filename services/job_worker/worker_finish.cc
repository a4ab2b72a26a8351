// The finisher: what the queue threads ran is published, recorded and acked
// here, many jobs per round, so no queue thread waits on the broker or the
// store, and a round costs one publish call (or a few, for many events), one
// store write and one ack call however many jobs it holds.
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"
#include "services/job_worker/worker.h"

namespace switchboard::jobs {

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
    PublishRound(batch);
    // Recorded by sb-record while this thread publishes the next round: the
    // broker's round trip and the store's commit overlap.
    absl::MutexLock lock(&finish_mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(finish_mu_) {
      return to_record_.size() < kMaxRecordRounds;
    };
    finish_mu_.Await(absl::Condition(&room));
    to_record_.push_back(std::move(batch));
  }
}

void Worker::RecordLoop() {
  SetThreadName("sb-record");
  while (true) {
    std::vector<Finished> batch;
    {
      absl::MutexLock lock(&finish_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(finish_mu_) {
        return !to_record_.empty() || record_stop_;
      };
      finish_mu_.Await(absl::Condition(&ready));
      if (to_record_.empty()) return;  // stopping, and everything was recorded
      batch = std::move(to_record_.front());
      to_record_.pop_front();
    }
    RecordRound(std::move(batch));
  }
}

void Worker::PublishRound(std::vector<Finished>& batch) {
  // 1. Every job's events (a completed job's output and job.completed, a
  // failed attempt's job.failed), each job's whole or not at all: one
  // refused event fails only its own job. Out before the record: a job
  // recorded done or failed always told the world so, even across a crash.
  std::vector<EncodedEvents> submissions;
  submissions.reserve(batch.size());
  for (Finished& f : batch) submissions.push_back(std::move(f.events));
  std::vector<absl::Status> published = publisher_->PublishEach(std::move(submissions));
  for (size_t i = 0; i < batch.size(); ++i) {
    if (published[i].ok()) continue;
    Finished& f = batch[i];
    if (f.outcome != "completed" && published[i].code() == absl::StatusCode::kInvalidArgument) {
      // The broker refuses this job.failed for good: running the attempt
      // again would not change that, so the failure is recorded unannounced.
      LogError("job.failed refused by the broker; recording the attempt without it",
               {{"job_id", f.job.id()}, {"error", published[i].ToString()}});
      continue;
    }
    // The work is done but its events are not out: let the broker redeliver
    // (the re-run's events carry the same ids).
    LogError("publishing job results failed",
             {{"job_id", f.job.id()}, {"error", published[i].ToString()}});
    f.job.set_attempt(f.job.attempt() - 1);
    f.ack = false;
    f.nack_delay = absl::Seconds(1);
    f.nack_reason = absl::StrCat("publishing the job's events failed: ", published[i].message());
    f.outcome = "publish_failed";
  }
}

void Worker::RecordRound(std::vector<Finished> batch) {
  // 2. Record, then ack: a crash in between re-runs the job (at-least-once),
  // never loses it.
  std::vector<v1::Job> records;
  for (const Finished& f : batch) {
    if (f.outcome != "publish_failed") records.push_back(f.job);
  }
  absl::Status recorded = store_->PutMany(records);
  if (!recorded.ok()) {
    LogError("job store write failed",
             {{"jobs", static_cast<uint64_t>(records.size())}, {"error", recorded.ToString()}});
    for (Finished& f : batch) {
      if (f.outcome == "publish_failed") continue;
      f.outcome = "record_failed";  // it runs again: not counted as finished
      f.ack = false;
      f.nack_delay = absl::Seconds(1);
      f.nack_reason = absl::StrCat("recording the job failed: ", recorded.message());
    }
  }

  // 3. Counts, then the acks in one call and the nacks.
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
  std::map<std::tuple<std::string, std::string, std::string>, double> outcomes;
  for (const Finished& f : batch) outcomes[{f.job.queue(), f.job.type(), f.outcome}] += 1;
  for (const auto& [key, n] : outcomes) {
    const auto& [queue, type, outcome] = key;
    metrics_->jobs.Add({{"queue", queue}, {"type", type}, {"outcome", outcome}}).Increment(n);
  }
  acker_->AckMany(std::move(acks));
  NackAll(nacks);
}

void Worker::NackAll(const std::vector<std::pair<std::string, const Finished*>>& nacks) {
  // A failed round (the broker or the store down) nacks all its jobs with
  // one reason: one call.
  std::map<std::pair<absl::Duration, std::string>, std::vector<std::string>> groups;
  for (const auto& [ack_id, f] : nacks) groups[{f->nack_delay, f->nack_reason}].push_back(ack_id);
  for (auto& [key, ids] : groups) {
    auto send = [this, delay = key.first, reason = key.second, ids = std::move(ids)] {
      absl::Status s = broker_->Nack(options_.group, ids, delay, reason, absl::Seconds(10));
      if (!s.ok()) {
        LogWarn("nack failed",
                {{"events", static_cast<uint64_t>(ids.size())}, {"error", s.ToString()}});
      }
    };
    // A nack is a hint (a lost one means a redelivery after the deadline);
    // with the pool full it goes out from here.
    if (!nacker_->Submit(send)) send();
  }
}

}  // namespace switchboard::jobs
