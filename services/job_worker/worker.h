#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_H_

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "libs/broker_client/batching.h"
#include "libs/broker_client/broker_client.h"
#include "libs/common/clock.h"
#include "libs/common/executor.h"
#include "services/job_worker/handlers.h"
#include "services/job_worker/job_store.h"
#include "services/job_worker/worker_config.h"
#include "services/job_worker/worker_metrics.h"
#include "switchboard/jobs/v1/jobs.pb.h"

namespace switchboard::jobs {

struct WorkerOptions {
  std::string worker_id;
  std::string group = "job-worker";
  absl::Duration ack_deadline = absl::Seconds(30);
  // On shutdown, how long running jobs may take to finish.
  absl::Duration drain_timeout = absl::Seconds(20);
  absl::Duration publish_timeout = absl::Seconds(30);
  // Group members this worker runs: each has its own stream and thread, so
  // reading and decoding deliveries is not one thread's job.
  int streams = 4;
  // Where a new consumer group starts (an existing one resumes).
  broker::v1::SubscribeRequest::StartPosition start = broker::v1::SubscribeRequest::LATEST;
  // On a shared store: how often paused queues, the stats and the other
  // workers' loads are read and this worker's load is reported.
  absl::Duration sync_every = absl::Milliseconds(250);
  // A global-concurrency slot lasts this long unless renewed (every fourth
  // sync): a dead worker's slots free within it.
  absl::Duration slot_lease = absl::Seconds(15);
};

// The job-worker's logic: events from the broker's "job-worker" group become
// jobs on per-queue workers; handlers' events and job.* lifecycle events go
// back to the broker; the triggering event is acked only once its job
// completed or finally failed.
class Worker {
 public:
  Worker(WorkerOptions options, ResolvedConfig config, const HandlerRegistry* handlers,
         JobStore* store, BrokerClient* broker, Clock* clock, WorkerMetrics* metrics);
  ~Worker();

  absl::Status Start();
  // SIGTERM: stop taking events, let running jobs finish (bounded), hand the
  // waiting ones back to the broker. Returns false if some job did not finish.
  bool Shutdown();
  bool ready() const;

  v1::GetStatsResponse GetStats();
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> GetJob(const v1::GetJobRequest& request);
  absl::StatusOr<v1::QueueStats> SetPaused(const std::string& queue, bool paused);

  // Events from the broker, as one stream message brought them (the
  // subscription's thread).
  void OnDeliveries(const google::protobuf::RepeatedPtrField<broker::v1::Delivery>& deliveries);
  void OnDelivery(const broker::v1::Delivery& delivery);

 private:
  // trigger, route and arrived are set before the task is queued and never
  // change; ack_id and job change under mu_ (RunTask works on a copy of the
  // job and publishes it back, so GetJob/ListJobs never see a half update).
  struct Task {
    events::v1::Event trigger;
    std::string ack_id;
    const JobRoute* route = nullptr;
    v1::Job job;
    absl::Time arrived;
    int priority = 0;  // the route's, raised by the event's metadata["priority"]
  };
  struct Queue {
    QueueSettings settings;
    std::deque<std::shared_ptr<Task>> waiting;
    std::map<std::string, std::shared_ptr<Task>> active;
    // Ran, and waiting for the finisher to publish, record and ack them.
    std::map<std::string, std::shared_ptr<Task>> finishing;
    bool paused = false;
    // Wakes one idle worker thread per queued job (absl::Condition waiters
    // would all be re-evaluated on every unlock of mu_).
    absl::CondVar work;
    uint64_t completed = 0, failed = 0, retried = 0;
    double processing_ms_total = 0;
    uint64_t processed = 0;
    std::vector<std::thread> threads;
    // Global-concurrency slots this worker holds (renewed by SyncLoop).
    std::set<std::string> slot_holders;
    // Bumped by SetPaused: a sync that read the store before the change
    // does not undo it.
    uint64_t pause_epoch = 0;
    // This queue's series (set at Start: no label lookup per job).
    prometheus::Gauge* depth_gauge = nullptr;
    prometheus::Gauge* in_flight_gauge = nullptr;
    prometheus::Histogram* duration = nullptr;
    prometheus::Histogram* queue_wait = nullptr;
    prometheus::Counter* retries = nullptr;
  };
  // What a run leaves to the finisher: publish the job's events, record it,
  // then ack or nack its event.
  struct Finished {
    std::shared_ptr<Task> task;
    Queue* queue = nullptr;
    v1::Job job;
    // Published before the job is recorded: a completed job's output events
    // and job.completed, or a failed attempt's job.failed.
    EncodedEvents events;
    std::string outcome;  // completed, retried, failed; then maybe publish_failed
    bool ack = false;
    absl::Duration nack_delay;
    std::string nack_reason;  // the dead letter's last_error if this was its last delivery
    absl::Duration took;
  };
  // The deployment's view, read from a shared store by SyncLoop.
  struct SharedView {
    bool valid = false;
    std::map<std::pair<std::string, int>, uint64_t> counts;
    std::map<std::string, uint64_t> retried;
    std::map<std::string, QueueLoad> others;
  };

  void RunQueue(const std::string& queue_name);
  void RunTask(Queue* queue, const std::shared_ptr<Task>& task);
  // The finisher: sb-finish publishes every job run since its last round
  // together (one batch), then sb-record records them (one write) and acks
  // them (one call), while sb-finish publishes the next round.
  void FinishLoop();
  void PublishRound(std::vector<Finished>& batch);
  // sb-record: records a published round, then acks and nacks it.
  void RecordLoop();
  void RecordRound(std::vector<Finished> batch);
  // Nacks grouped by delay and reason, sent from nacker_ so that a slow
  // broker never holds the finisher (and every other job's ack).
  void NackAll(const std::vector<std::pair<std::string, const Finished*>>& nacks);
  // Jobs per finisher round: enough to amortise the round's calls. The loop
  // is bound by rounds, not CPU (job_bench: the machine 41 % idle at 200 a
  // round): 500 gave 9-11 % more jobs/s embedded and 5 % on Redis; 1000 no
  // more than 500.
  static constexpr size_t kMaxRound = 500;
  // Jobs run but not yet taken by the finisher: past this, queue threads
  // wait, so a stalled broker or store stops new runs instead of piling up
  // work that would only be nacked and run again.
  static constexpr size_t kMaxUnfinished = 2 * kMaxRound;
  // Published rounds waiting for sb-record.
  static constexpr size_t kMaxRecordRounds = 2;
  // A job's error as kept and published.
  static constexpr size_t kMaxJobErrorBytes = 4096;
  void ExtendDeadlinesLoop();
  // Paused queues, stats and loads from/to a shared store; slot renewals.
  void SyncLoop();
  // Takes a global-concurrency slot for `task` when its queue has a cap;
  // false: the task went back to the queue's head (try again shortly).
  bool TakeSlot(const std::string& name, Queue* q, const std::shared_ptr<Task>& task,
                std::string* holder);
  WireEvent LifecycleEvent(const Task& task, const v1::Job& job, absl::string_view type,
                           absl::string_view id_suffix);
  static EncodedEvents Encoded(const WireEvent& event);
  // Queues a claimed delivery (its job id in held_) whose record, if any,
  // is `existing`, or acks it when that record is final.
  void Admit(const broker::v1::Delivery& d, const JobRoute* route, const std::string& job_id,
             std::shared_ptr<Task> task, std::optional<v1::Job> existing);
  // Drops the claim on `job_id` (held_) and returns its latest ack id.
  std::string Release(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  void Ack(const std::string& ack_id);
  void FillQueueStats(const Queue& q, v1::QueueStats* out) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGauges(const std::string& name, const Queue& q);

  const WorkerOptions options_;
  const ResolvedConfig config_;
  const HandlerRegistry* handlers_;
  JobStore* store_;
  BrokerClient* broker_;
  Clock* clock_;
  WorkerMetrics* metrics_;

  mutable absl::Mutex mu_;
  std::map<std::string, Queue> queues_ ABSL_GUARDED_BY(mu_);
  // Every job waiting or running, by id: a redelivery finds its job in O(1).
  absl::flat_hash_map<std::string, std::shared_ptr<Task>> held_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  SharedView shared_ ABSL_GUARDED_BY(mu_);
  // Whether SyncLoop has read the paused queues of a shared store yet.
  bool synced_ ABSL_GUARDED_BY(mu_) = false;
  // stopping_, for SyncLoop between store calls (without mu_).
  std::atomic<bool> stopping_flag_{false};
  // Makes slot holder names unique across runs and processes.
  const std::string slot_nonce_;
  std::atomic<uint64_t> slot_runs_{0};
  std::unique_ptr<BatchPublisher> publisher_;
  std::unique_ptr<BatchAcker> acker_;
  std::vector<std::unique_ptr<BrokerSubscription>> subscriptions_;
  absl::Mutex finish_mu_;
  // At most kMaxUnfinished (RunTask waits for room).
  std::vector<Finished> to_finish_ ABSL_GUARDED_BY(finish_mu_);
  bool finish_stop_ ABSL_GUARDED_BY(finish_mu_) = false;
  std::deque<std::vector<Finished>> to_record_ ABSL_GUARDED_BY(finish_mu_);
  bool record_stop_ ABSL_GUARDED_BY(finish_mu_) = false;
  std::thread finisher_;
  std::thread recorder_;
  std::unique_ptr<Executor> nacker_;
  // Set once the finisher is done: deadlines are extended until every job
  // held was recorded.
  bool extend_stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread extender_;
  std::thread syncer_;
  // Handlers still running after the drain time are told to stop.
  absl::Notification cancel_;
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_H_
