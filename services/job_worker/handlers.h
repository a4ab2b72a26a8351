#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_HANDLERS_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_HANDLERS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "switchboard/events/v1/event.pb.h"
#include "switchboard/jobs/v1/jobs.pb.h"

namespace switchboard::jobs {

// What a handler sees of its job.
struct JobContext {
  const events::v1::Event& trigger;
  const v1::Job& job;
  absl::Time deadline;
  const v1::PaymentRule& payment_rule;
  // Durable counters (e.g. order numbers) from the worker's store.
  std::function<absl::StatusOr<uint64_t>(const std::string& name)> next_counter;
  // Notified when the worker gives up waiting for running jobs (shutdown past
  // its drain time): a handler that waits should return at once.
  const absl::Notification* cancel = nullptr;
};

// Events a successful job emits, in order. The worker sets their ids,
// source, correlation_id and (unless set here) subject.
struct JobOutput {
  std::vector<events::v1::Event> events;
};

// One job type. A new job type is one class plus one line of configuration.
// Run may fail (the worker retries per the queue's policy); it should return
// by ctx.deadline.
class JobHandler {
 public:
  virtual ~JobHandler() = default;
  virtual absl::StatusOr<JobOutput> Run(const JobContext& ctx) = 0;
};

class HandlerRegistry {
 public:
  void Register(const std::string& job_type, std::unique_ptr<JobHandler> handler);
  JobHandler* Find(const std::string& job_type) const;
  std::vector<std::string> Types() const;

 private:
  std::map<std::string, std::unique_ptr<JobHandler>> handlers_;
};

// The order flow of SPEC §4 (order-creation, payment-processing,
// inventory-update, send-confirmation, abandoned-cart-email) and diagnostic
// types: "noop" (does nothing), "flaky" (fails while its attempt is <= the
// trigger's data.failTimes, default 2; data.failTimes < 0 always fails) and
// "sleep" (takes data.sleepMs, default 1000).
void RegisterBuiltinHandlers(HandlerRegistry* registry);

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_HANDLERS_H_
