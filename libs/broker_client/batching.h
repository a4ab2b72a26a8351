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
//
// A failed batch answers its synchronous publishers with the error (they
// decide what to do, e.g. the worker nacks its job); its asynchronous events
// go back to the front of the queue, in order, and are retried with
// exponential backoff and jitter until they are published. Only an error that
// a retry cannot fix (INVALID_ARGUMENT and the like) drops them, logged.
//
// The queue is bounded: at most max_queued events wait or are in flight;
// Publish and PublishAsync wait for room (backpressure). A single submission
// larger than the bound is taken when nothing else is queued.
//
// Destruction interrupts the backoff and makes one last attempt with what is
// queued; events that could not be published then are logged (count) and
// dropped, and synchronous publishers get the error.
class BatchPublisher {
 public:
  BatchPublisher(BrokerClient* broker, size_t max_batch = 1000,
                 absl::Duration timeout = absl::Seconds(30), size_t max_queued = 100000,
                 absl::Duration initial_backoff = absl::Milliseconds(100),
                 absl::Duration max_backoff = absl::Seconds(5),
                 size_t max_batch_bytes = kMaxBatchBytes);
  ~BatchPublisher();
  // Bytes of events per call, far below the broker's 64 MiB message limit: a
  // batch of many large submissions is split rather than refused whole (and
  // retried whole, refused again). A single larger submission goes alone.
  static constexpr size_t kMaxBatchBytes = 16u << 20;

  // Returns once the events are durable in the broker (or failed). Events
  // without an id get one (NewId("evt")).
  absl::Status Publish(std::vector<events::v1::Event> events);
  absl::Status Publish(EncodedEvents events);
  // Publish for several submissions at once: each is published whole or
  // fails alone (a refused event fails only its own submission); one status
  // per submission, in order.
  std::vector<absl::Status> PublishEach(std::vector<EncodedEvents> submissions);
  // Queues the events; they are published in order with the rest, retried
  // until they are. Events without an id get one first, so that a retry is
  // recognised by the broker's dedupe window.
  void PublishAsync(std::vector<events::v1::Event> events);
  void PublishAsync(EncodedEvents events);

  // Events queued or in flight.
  size_t pending_events() const;
  // Publish/PublishAsync calls waiting for room in the queue.
  size_t blocked_callers() const;
  // Asynchronous events given up on (permanent error, or destruction).
  uint64_t dropped_events() const;

 private:
  struct Pending {
    EncodedEvents events;
    std::shared_ptr<struct Waiter> waiter;  // null for async
    bool alone = false;                     // sent in a batch of its own (its batch was refused)
  };
  // Waits for room for n events, at most the publish timeout; an error if
  // there was none by then or the publisher is stopping.
  absl::Status WaitForRoom(size_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();

  BrokerClient* const broker_;
  const size_t max_batch_;
  const size_t max_batch_bytes_;
  const absl::Duration timeout_;
  const size_t max_queued_;
  const absl::Duration initial_backoff_;
  const absl::Duration max_backoff_;
  mutable absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  // Events in queue_ plus those in the batch in flight.
  size_t pending_events_ ABSL_GUARDED_BY(mu_) = 0;
  size_t blocked_callers_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
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
  void AckMany(std::vector<std::string> ack_ids);
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
