#ifndef SWITCHBOARD_LIBS_BROKER_CLIENT_BATCHING_H_
#define SWITCHBOARD_LIBS_BROKER_CLIENT_BATCHING_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/broker_client/broker_client.h"

namespace switchboard {

// Coalesces publishes from many threads into PublishBatch calls: one call is
// in flight at a time and whatever arrives meanwhile goes in the next one
// (client-side group commit). Events keep their submission order in the log.
class BatchPublisher {
 public:
  BatchPublisher(BrokerClient* broker, size_t max_batch = 1000,
                 absl::Duration timeout = absl::Seconds(30));
  ~BatchPublisher();

  // Returns once the events are durable in the broker (or failed).
  absl::Status Publish(std::vector<events::v1::Event> events);
  // Queues the events; they are published in order with the rest.
  void PublishAsync(std::vector<events::v1::Event> events);

 private:
  struct Pending {
    std::vector<events::v1::Event> events;
    std::shared_ptr<struct Waiter> waiter;  // null for async
  };
  void Run();

  BrokerClient* const broker_;
  const size_t max_batch_;
  const absl::Duration timeout_;
  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Coalesces acks of one group into Ack calls the same way. Acks are
// at-least-once hints: a lost one means a redelivery, which consumers handle.
class BatchAcker {
 public:
  BatchAcker(BrokerClient* broker, std::string group, size_t max_batch = 1000);
  ~BatchAcker();
  void Ack(std::string ack_id);
  // Waits until every ack queued so far was sent.
  void Flush();

 private:
  void Run();

  BrokerClient* const broker_;
  const std::string group_;
  const size_t max_batch_;
  absl::Mutex mu_;
  std::vector<std::string> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_LIBS_BROKER_CLIENT_BATCHING_H_
