#include "libs/broker_client/batching.h"

#include "absl/synchronization/notification.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"

namespace switchboard {

struct Waiter {
  absl::Notification done;
  absl::Status status;
};

BatchPublisher::BatchPublisher(BrokerClient* broker, size_t max_batch, absl::Duration timeout)
    : broker_(broker), max_batch_(max_batch), timeout_(timeout) {
  thread_ = std::thread([this] { Run(); });
}

BatchPublisher::~BatchPublisher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

absl::Status BatchPublisher::Publish(std::vector<events::v1::Event> events) {
  auto waiter = std::make_shared<Waiter>();
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(Pending{std::move(events), waiter});
  }
  waiter->done.WaitForNotification();
  return waiter->status;
}

void BatchPublisher::PublishAsync(std::vector<events::v1::Event> events) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(Pending{std::move(events), nullptr});
}

void BatchPublisher::Run() {
  SetThreadName("sb-publish");
  while (true) {
    std::vector<Pending> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stop_; };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and everything was sent
      size_t n = 0;
      // Whole submissions only, so each stays one atomic append.
      while (!queue_.empty() && (batch.empty() || n + queue_.front().events.size() <= max_batch_)) {
        n += queue_.front().events.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<events::v1::Event> events;
    for (Pending& p : batch) {
      for (auto& e : p.events) events.push_back(std::move(e));
    }
    absl::Status s = broker_->PublishBatch(std::move(events), timeout_).status();
    if (!s.ok()) LogWarn("batched publish failed", {{"error", s.ToString()}});
    for (Pending& p : batch) {
      if (p.waiter != nullptr) {
        p.waiter->status = s;
        p.waiter->done.Notify();
      }
    }
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
