#include "libs/broker_client/batching.h"

#include <algorithm>
#include <cmath>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "libs/common/backoff.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"

namespace switchboard {

struct Waiter {
  absl::Notification done;
  absl::Status status;
};

namespace {

// Errors a retry cannot fix: the broker refused the events themselves.
bool IsPermanent(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
      return true;
    default:
      return false;
  }
}

EncodedEvents Encode(std::vector<events::v1::Event> events) {
  EncodedEvents out;
  for (auto& e : events) out.Add(std::move(e));
  return out;
}

}  // namespace

BatchPublisher::BatchPublisher(BrokerClient* broker, size_t max_batch, absl::Duration timeout,
                               size_t max_queued, absl::Duration initial_backoff,
                               absl::Duration max_backoff, size_t max_batch_bytes)
    : broker_(broker),
      max_batch_(std::max<size_t>(max_batch, 1)),
      max_batch_bytes_(std::max<size_t>(max_batch_bytes, 1)),
      timeout_(timeout),
      max_queued_(std::max<size_t>(max_queued, 1)),
      initial_backoff_(initial_backoff),
      max_backoff_(std::max(max_backoff, initial_backoff)) {
  thread_ = std::thread([this] { Run(); });
}

BatchPublisher::~BatchPublisher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    // Callers waiting for room give up; let them leave before mu_ goes.
    auto gone = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return blocked_callers_ == 0; };
    mu_.Await(absl::Condition(&gone));
  }
  thread_.join();
}

absl::Status BatchPublisher::WaitForRoom(size_t n) {
  auto room = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || pending_events_ == 0 || pending_events_ + n <= max_queued_;
  };
  if (!room()) {
    // Bounded like a publish: a broker that takes nothing for that long
    // must not hold a caller (and its shutdown) forever.
    ++blocked_callers_;
    bool got = mu_.AwaitWithTimeout(absl::Condition(&room), timeout_);
    --blocked_callers_;
    if (!got) {
      return absl::DeadlineExceededError(
          absl::StrCat("publish queue full (", pending_events_, " events) for ",
                       absl::FormatDuration(timeout_), ": the broker is not taking events"));
    }
  }
  if (stop_) return absl::UnavailableError("publisher is shutting down");
  return absl::OkStatus();
}

absl::Status BatchPublisher::Publish(std::vector<events::v1::Event> events) {
  return Publish(Encode(std::move(events)));
}

absl::Status BatchPublisher::Publish(EncodedEvents events) {
  auto waiter = std::make_shared<Waiter>();
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status room = WaitForRoom(events.count()); !room.ok()) return room;
    pending_events_ += events.count();
    queue_.push_back(Pending{std::move(events), waiter});
  }
  waiter->done.WaitForNotification();
  return waiter->status;
}

std::vector<absl::Status> BatchPublisher::PublishEach(std::vector<EncodedEvents> submissions) {
  std::vector<std::shared_ptr<Waiter>> waiters(submissions.size());
  std::vector<absl::Status> out(submissions.size());
  {
    absl::MutexLock lock(&mu_);
    // Room for each in turn, as for separate Publish calls: the whole round
    // never waits for an empty queue.
    for (size_t i = 0; i < submissions.size(); ++i) {
      if (absl::Status room = WaitForRoom(submissions[i].count()); !room.ok()) {
        // One wait per call, not per submission: the rest fail with it.
        for (size_t j = i; j < submissions.size(); ++j) out[j] = room;
        break;
      }
      pending_events_ += submissions[i].count();
      waiters[i] = std::make_shared<Waiter>();
      queue_.push_back(Pending{std::move(submissions[i]), waiters[i]});
    }
  }
  for (size_t i = 0; i < waiters.size(); ++i) {
    if (waiters[i] == nullptr) continue;
    waiters[i]->done.WaitForNotification();
    out[i] = waiters[i]->status;
  }
  return out;
}

void BatchPublisher::PublishAsync(std::vector<events::v1::Event> events) {
  PublishAsync(Encode(std::move(events)));
}

void BatchPublisher::PublishAsync(EncodedEvents events) {
  absl::MutexLock lock(&mu_);
  if (absl::Status room = WaitForRoom(events.count()); !room.ok()) {
    dropped_ += events.count();
    LogError("events dropped",
             {{"events", static_cast<uint64_t>(events.count())}, {"error", room.ToString()}});
    return;
  }
  pending_events_ += events.count();
  queue_.push_back(Pending{std::move(events), nullptr});
}

size_t BatchPublisher::pending_events() const {
  absl::MutexLock lock(&mu_);
  return pending_events_;
}

size_t BatchPublisher::blocked_callers() const {
  absl::MutexLock lock(&mu_);
  return blocked_callers_;
}

uint64_t BatchPublisher::dropped_events() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

void BatchPublisher::Run() {
  SetThreadName("sb-publish");
  // Consecutive failed attempts that put events back.
  Backoff retry_backoff(BackoffPolicy{initial_backoff_, 2.0, max_backoff_, 0.5});
  // Stopping, and the last attempt failed: what is left is not tried again.
  bool give_up = false;
  uint64_t dropped_at_stop = 0;
  while (true) {
    std::vector<Pending> batch;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) break;  // stopping, and everything was handled
      stopping = stop_;
      size_t n = 0, bytes = 0;
      // Whole submissions only, so each stays one atomic append. One marked
      // `alone` (its batch was refused) goes by itself.
      while (!queue_.empty() &&
             (batch.empty() || (!queue_.front().alone && !batch.front().alone &&
                                n + queue_.front().events.count() <= max_batch_ &&
                                bytes + queue_.front().events.wire().size() <= max_batch_bytes_))) {
        n += queue_.front().events.count();
        bytes += queue_.front().events.wire().size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    absl::Status s;
    if (give_up) {
      s = absl::UnavailableError("publisher stopped after a failed last attempt");
    } else {
      // One submission is sent as it is; several are joined (appending
      // bytes).
      EncodedEvents joined;
      if (batch.size() > 1) {
        for (const Pending& p : batch) joined.Append(p.events);
      }
      s = broker_->PublishEncoded(batch.size() > 1 ? joined : batch.front().events, timeout_)
              .status();
    }
    const bool retry = !s.ok() && !stopping && !IsPermanent(s);
    // The broker refused the batch for good (a bad event): one submission
    // must not take the others down with it, so each is sent again alone,
    // and only the bad one fails.
    const bool split = !s.ok() && !stopping && IsPermanent(s) && batch.size() > 1;
    size_t done = 0;  // events that leave the queue for good
    uint64_t dropped = 0;
    std::vector<Pending> again;
    uint64_t retrying = 0;
    for (Pending& p : batch) {
      if (split) {
        p.alone = true;
        again.push_back(std::move(p));
      } else if (p.waiter != nullptr) {
        done += p.events.count();
        p.waiter->status = s;
        p.waiter->done.Notify();
      } else if (retry) {
        retrying += p.events.count();
        again.push_back(std::move(p));
      } else {
        done += p.events.count();
        if (!s.ok()) dropped += p.events.count();
      }
    }
    if (!s.ok() && !give_up) {
      LogWarn("batched publish failed", {{"error", s.ToString()}, {"retrying_events", retrying}});
    }
    if (dropped > 0 && !stopping) {
      LogError("events dropped: the broker refused them",
               {{"error", s.ToString()}, {"events", dropped}});
    }
    if (stopping && !s.ok()) {
      give_up = true;
      dropped_at_stop += dropped;
    }
    absl::Duration backoff = absl::ZeroDuration();
    if (!again.empty()) {
      backoff = retry_backoff.Next();
    } else if (s.ok()) {
      retry_backoff.Reset();
    }
    absl::MutexLock lock(&mu_);
    // Put back ahead of everything queued since, in their order.
    for (auto it = again.rbegin(); it != again.rend(); ++it) queue_.push_front(std::move(*it));
    pending_events_ -= done;
    dropped_ += dropped;
    if (backoff > absl::ZeroDuration()) {
      // Destruction cuts the wait short for one last attempt.
      mu_.AwaitWithTimeout(absl::Condition(&stop_), backoff);
    }
  }
  if (dropped_at_stop > 0) {
    LogError("publisher stopped: events that could not be published were dropped",
             {{"events", dropped_at_stop}});
  }
}

BatchAcker::BatchAcker(BrokerClient* broker, std::string group, size_t max_batch)
    : broker_(broker), group_(std::move(group)), max_batch_(max_batch) {
  thread_ = std::thread([this] { Run(); });
}

BatchAcker::~BatchAcker() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void BatchAcker::Ack(std::string ack_id) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(ack_id));
  ++queued_;
}

void BatchAcker::AckMany(std::vector<std::string> ack_ids) {
  if (ack_ids.empty()) return;
  absl::MutexLock lock(&mu_);
  queued_ += ack_ids.size();
  if (queue_.empty()) {
    queue_.swap(ack_ids);
  } else {
    queue_.insert(queue_.end(), std::make_move_iterator(ack_ids.begin()),
                  std::make_move_iterator(ack_ids.end()));
  }
}

void BatchAcker::Flush() {
  absl::MutexLock lock(&mu_);
  uint64_t target = queued_;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return sent_ >= target || stop_; };
  mu_.Await(absl::Condition(&done));
}

void BatchAcker::Run() {
  SetThreadName("sb-ack");
  while (true) {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;
      if (queue_.size() <= max_batch_) {
        ids.swap(queue_);
      } else {
        ids.assign(queue_.begin(), queue_.begin() + max_batch_);
        queue_.erase(queue_.begin(), queue_.begin() + max_batch_);
      }
    }
    absl::Status s = broker_->Ack(group_, ids, absl::Seconds(10));
    if (!s.ok()) LogWarn("batched ack failed", {{"error", s.ToString()}, {"group", group_}});
    absl::MutexLock lock(&mu_);
    sent_ += ids.size();
  }
}

}  // namespace switchboard
