#include "services/job_worker/worker.h"

#include <algorithm>
#include <set>

#include "absl/random/distributions.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/thread_name.h"
#include "libs/common/wire_check.h"

namespace switchboard::jobs {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToProto(absl::Time t) { return ToProtoTime(t); }

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

// The job id follows from the triggering event, so a redelivery of the event
// is recognised as the same job; it starts with the event's time (when its
// id is a ULID), so the SQLite store's id index grows at its end.
std::string JobIdFor(const events::v1::Event& trigger) {
  return DeriveOrderedId("job", trigger.id());
}

}  // namespace

Worker::Worker(WorkerOptions options, ResolvedConfig config, const HandlerRegistry* handlers,
               JobStore* store, BrokerClient* broker, Clock* clock, WorkerMetrics* metrics)
    : options_(std::move(options)),
      config_(std::move(config)),
      handlers_(handlers),
      store_(store),
      broker_(broker),
      clock_(clock),
      metrics_(metrics),
      slot_nonce_(
          absl::StrCat(absl::Hex(absl::Uniform<uint32_t>(absl::BitGen()), absl::kZeroPad8))),
      // Many jobs publish and ack at once: share RPCs between them.
      publisher_(std::make_unique<BatchPublisher>(broker, 1000, options_.publish_timeout)),
      acker_(std::make_unique<BatchAcker>(broker, options_.group)),
      // Each task is one Nack call; past this many queued they are sent
      // inline by sb-record.
      nacker_(std::make_unique<Executor>("sb-nack", 2, 10000)) {}

Worker::~Worker() { Shutdown(); }

absl::Status Worker::Start() {
  // A shared store's counts are read by SyncLoop (they change under other
  // workers too); an embedded one's are counted here from the start.
  std::map<std::pair<std::string, int>, uint64_t> counts;
  std::map<std::string, uint64_t> retried;
  std::set<std::string> paused;
  bool paused_known = true;
  if (store_->shared()) {
    // The deployment's paused queues before anything runs; if the store
    // cannot say yet, every queue is held paused until SyncLoop's first read.
    absl::StatusOr<std::set<std::string>> p = store_->PausedQueues();
    if (p.ok()) {
      paused = *std::move(p);
    } else {
      LogWarn("paused queues unknown yet: holding every queue until the store answers",
              {{"error", p.status().ToString()}});
      for (const auto& [name, settings] : config_.queues) paused.insert(name);
      paused_known = false;
    }
  } else {
    auto c = store_->CountByQueueAndStatus();
    if (!c.ok()) return c.status();
    counts = *std::move(c);
    auto r = store_->RetriedByQueue();
    if (!r.ok()) return r.status();
    retried = *std::move(r);
    auto p = store_->PausedQueues();
    if (!p.ok()) return p.status();
    paused = *std::move(p);
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, settings] : config_.queues) {
      Queue& q = queues_[name];
      q.settings = settings;
      q.completed = counts[{name, v1::JOB_STATUS_COMPLETED}];
      q.failed = counts[{name, v1::JOB_STATUS_FAILED}];
      q.retried = retried[name];
      q.paused = paused.count(name) > 0;
    }
    synced_ = paused_known;
    for (auto& [name, q] : queues_) {
      // Every queue's series exist from the start, so the rules and alerts
      // over them have a value before the first job (deploy/prometheus).
      q.depth_gauge = &metrics_->queue_depth.Add({{"queue", name}});
      q.in_flight_gauge = &metrics_->in_flight.Add({{"queue", name}});
      q.duration = &metrics_->duration.Add({{"queue", name}}, WorkerMetrics::Buckets());
      q.queue_wait = &metrics_->queue_wait.Add({{"queue", name}}, WorkerMetrics::Buckets());
      q.retries = &metrics_->retries.Add({{"queue", name}});
      UpdateGauges(name, q);
      for (uint32_t i = 0; i < q.settings.concurrency; ++i) {
        q.threads.emplace_back([this, name = name] { RunQueue(name); });
      }
    }
  }
  uint32_t slots = 0;
  uint32_t max_attempts = 1;
  for (const auto& [name, s] : config_.queues) {
    slots += s.concurrency;
    max_attempts = std::max(max_attempts, s.attempts);
  }
  broker::v1::SubscribeRequest req;
  req.set_group(options_.group);
  for (const std::string& t : config_.EventTypes()) req.add_types(t);
  req.set_start(options_.start);
  *req.mutable_ack_deadline() = ToProtoDuration(options_.ack_deadline);
  // Prefetch: by Little's law the events held (queued + running + waiting
  // for their ack) bound throughput at held / per-job latency, so hold a lot
  // more than the slots.
  req.set_max_in_flight(std::max<uint32_t>(20 * slots, 1000));
  // The worker counts attempts itself; the broker's limit only stops a
  // poison event that crashes the worker over and over.
  req.set_max_deliveries(std::max<uint32_t>(max_attempts + 10, 20));
  req.set_max_in_flight(req.max_in_flight() / std::max(1, options_.streams) + 1);
  for (int i = 0; i < std::max(1, options_.streams); ++i) {
    auto sub = broker_->SubscribeGroupBatched(
        req, [this](const broker::v1::DeliveryBatch& b) { OnDeliveries(b.deliveries()); });
    if (sub != nullptr) subscriptions_.push_back(std::move(sub));
  }
  finisher_ = std::thread([this] { FinishLoop(); });
  recorder_ = std::thread([this] { RecordLoop(); });
  extender_ = std::thread([this] { ExtendDeadlinesLoop(); });
  syncer_ = std::thread([this] { SyncLoop(); });
  return absl::OkStatus();
}

bool Worker::ready() const {
  if (subscriptions_.empty()) return false;
  for (const auto& s : subscriptions_) {
    if (!s->connected()) return false;
  }
  return true;
}

void Worker::OnDelivery(const broker::v1::Delivery& d) {
  google::protobuf::RepeatedPtrField<broker::v1::Delivery> one;
  *one.Add() = d;
  OnDeliveries(one);
}

void Worker::OnDeliveries(
    const google::protobuf::RepeatedPtrField<broker::v1::Delivery>& deliveries) {
  // Claim each job id, then read the records of all claimed jobs in one
  // store call: one round trip per batch on Redis, one read transaction on
  // SQLite, instead of one per event on this stream's only thread.
  struct Claimed {
    const broker::v1::Delivery* d;
    const JobRoute* route;
    std::shared_ptr<Task> task;
  };
  std::vector<Claimed> claimed;
  std::vector<std::string> ids;
  for (const broker::v1::Delivery& d : deliveries) {
    const JobRoute* route = config_.Find(d.event().type());
    if (route == nullptr) {
      Ack(d.ack_id());  // not ours (the group's filter changed since)
      continue;
    }
    std::string job_id = JobIdFor(d.event());
    auto task = std::make_shared<Task>();
    task->ack_id = d.ack_id();
    task->route = route;
    {
      // Deliveries arrive on several streams at once. Claim the job id first,
      // so a redelivery of a job we hold (its deadline lapsed) only refreshes
      // the ack id and never runs it twice.
      absl::MutexLock lock(&mu_);
      auto [held, inserted] = held_.try_emplace(job_id, task);
      if (!inserted) {
        held->second->ack_id = d.ack_id();
        continue;
      }
    }
    claimed.push_back({&d, route, std::move(task)});
    ids.push_back(std::move(job_id));
  }
  if (claimed.empty()) return;
  absl::StatusOr<std::vector<std::optional<v1::Job>>> existing = store_->GetMany(ids);
  if (existing.ok() && existing->size() != ids.size()) {
    existing = absl::InternalError(
        absl::StrCat("job store answered ", existing->size(), " records for ", ids.size(), " ids"));
  }
  // One record that cannot be read (unreadable, a key of the wrong type)
  // fails the whole read: read each alone then, so that only its own job
  // waits. A store that is down or slow fails them all.
  const absl::Status& st = existing.status();
  bool one_by_one = !st.ok() && !absl::IsUnavailable(st) && !absl::IsDeadlineExceeded(st) &&
                    !absl::IsResourceExhausted(st);
  std::vector<std::string> unread;  // ack ids of the jobs whose record could not be read
  absl::Status failure;
  for (size_t i = 0; i < claimed.size(); ++i) {
    using Record = absl::StatusOr<std::optional<v1::Job>>;
    Record record = existing.ok() ? Record(std::move((*existing)[i]))
                    : one_by_one  ? store_->Get(ids[i])
                                  : Record(existing.status());
    if (!record.ok()) {
      failure = record.status();
      if (std::string ack_id = Release(ids[i]); !ack_id.empty()) unread.push_back(ack_id);
      continue;
    }
    Admit(*claimed[i].d, claimed[i].route, ids[i], std::move(claimed[i].task), *std::move(record));
  }
  if (!unread.empty()) {
    LogError("job store read failed",
             {{"jobs", static_cast<uint64_t>(unread.size())}, {"error", failure.ToString()}});
    // One call for all of them (the stream is not read meanwhile).
    absl::Status s = broker_->Nack(options_.group, unread, absl::Seconds(1),
                                   absl::StrCat("job store read failed: ", failure.message()),
                                   absl::Seconds(10));
    if (!s.ok())
      LogWarn("nack failed",
              {{"jobs", static_cast<uint64_t>(unread.size())}, {"error", s.ToString()}});
  }
}

std::string Worker::Release(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(job_id);
  if (it == held_.end()) return "";
  std::string ack_id = it->second->ack_id;
  held_.erase(it);
  return ack_id;
}

void Worker::Admit(const broker::v1::Delivery& d, const JobRoute* route, const std::string& job_id,
                   std::shared_ptr<Task> task, std::optional<v1::Job> existing) {
  if (existing.has_value() && (existing->status() == v1::JOB_STATUS_COMPLETED ||
                               existing->status() == v1::JOB_STATUS_FAILED)) {
    // Done before (the ack was lost, or the worker crashed before acking).
    metrics_->jobs
        .Add({{"queue", route->queue}, {"type", route->job_type}, {"outcome", "skipped_duplicate"}})
        .Increment();
    Ack(Release(job_id));
    return;
  }
  task->trigger = d.event();
  task->arrived = clock_->Now();
  const QueueSettings& settings = config_.queues.at(route->queue);
  v1::Job& job = task->job;
  if (existing.has_value()) job = *std::move(existing);
  job.set_id(job_id);
  job.set_type(route->job_type);
  job.set_queue(route->queue);
  job.set_status(v1::JOB_STATUS_WAITING);
  job.set_attempt(job.attempt() + 1);
  job.set_max_attempts(settings.attempts);
  job.set_trigger_event_id(d.event().id());
  job.set_trigger_event_type(d.event().type());
  job.set_correlation_id(d.event().correlation_id());
  job.set_subject(d.event().subject());
  job.set_worker_id(options_.worker_id);
  job.clear_next_retry_at();
  if (!job.has_enqueued_at()) *job.mutable_enqueued_at() = ToProto(task->arrived);
  if (job.attempt() == 1) {
    // Not waited for: the publisher keeps it ahead of this job's job.started.
    publisher_->PublishAsync(Encoded(LifecycleEvent(*task, job, "job.enqueued", "enqueued")));
  }
  task->priority = route->priority;
  if (auto it = d.event().metadata().find("priority"); it != d.event().metadata().end()) {
    int raised;
    if (absl::SimpleAtoi(it->second, &raised)) {
      task->priority = std::max(task->priority, std::min(raised, 1000));
    }
  }
  absl::MutexLock lock(&mu_);
  Queue& q = queues_[route->queue];
  // Highest priority first, FIFO within a priority: after the last waiting
  // job of at least this priority.
  auto pos = std::find_if(q.waiting.begin(), q.waiting.end(), [&](const std::shared_ptr<Task>& t) {
    return t->priority < task->priority;
  });
  q.waiting.insert(pos, std::move(task));
  q.work.Signal();
  UpdateGauges(route->queue, q);
}

void Worker::RunQueue(const std::string& name) {
  SetThreadName("q-" + name);
  while (true) {
    std::shared_ptr<Task> task;
    Queue* q;
    {
      absl::MutexLock lock(&mu_);
      q = &queues_[name];
      while (!(stopping_ || (!draining_ && !q->paused && !q->waiting.empty()))) {
        q->work.Wait(&mu_);
      }
      if (stopping_) return;
      task = std::move(q->waiting.front());
      q->waiting.pop_front();
      q->active[task->job.id()] = task;
      UpdateGauges(name, *q);
    }
    std::string holder;
    if (!TakeSlot(name, q, task, &holder)) continue;
    RunTask(q, task);
    if (!holder.empty()) {
      {
        absl::MutexLock lock(&mu_);
        q->slot_holders.erase(holder);
      }
      // A slot not given back ends with its lease.
      if (absl::Status s = store_->ReleaseSlot(name, holder); !s.ok()) {
        LogWarn("releasing a queue slot failed", {{"queue", name}, {"error", s.ToString()}});
      }
    }
  }
}

WireEvent Worker::LifecycleEvent(const Task& task, const v1::Job& job, absl::string_view type,
                                 absl::string_view id_suffix) {
  WireEvent ev;
  // Ids derive from the job and attempt, so a re-run after a crash repeats
  // them and the broker's dedupe window drops the repeats.
  ev.id(DeriveId("evt", {job.id(), id_suffix}))
      .type(type)
      .source("job-worker")
      .subject(task.trigger.subject())
      .correlation_id(task.trigger.correlation_id())
      .user_id(task.trigger.user_id());
  // The original design's WorkerStatusWebhook: status names the lifecycle
  // step (enqueued, started, completed, failed), processingTime is in ms.
  ev.Data("workerId", options_.worker_id)
      .Data("queueName", job.queue())
      .Data("jobId", job.id())
      .Data("jobType", job.type())
      .Data("status", type.substr(type.rfind('.') + 1))
      .Data("attempt", static_cast<double>(job.attempt()))
      .Data("maxAttempts", static_cast<double>(job.max_attempts()))
      .Data("processingTime", static_cast<double>(job.processing_time_ms()))
      .Data("processingTimeMs", static_cast<double>(job.processing_time_ms()))
      .Data("queueWaitMs", static_cast<double>(job.queue_wait_ms()))
      .Data("error", job.error())
      .Data("triggerEventId", job.trigger_event_id());
  if (job.has_next_retry_at()) {
    ev.Data("nextRetryAt", Rfc3339(FromProtoTime(job.next_retry_at())));
  }
  return ev;
}

EncodedEvents Worker::Encoded(const WireEvent& event) {
  EncodedEvents out;
  out.AddSerialized(event.Finish());
  return out;
}

void Worker::RunTask(Queue* queue, const std::shared_ptr<Task>& task) {
  v1::Job job;
  {
    absl::MutexLock lock(&mu_);
    job = task->job;
  }
  const QueueSettings& settings = queue->settings;
  absl::Time started = clock_->Now();
  job.set_status(v1::JOB_STATUS_ACTIVE);
  *job.mutable_started_at() = ToProto(started);
  job.set_queue_wait_ms(absl::ToInt64Milliseconds(started - task->arrived));
  job.clear_error();
  // A retry starts from the stored job: what the last attempt finished with
  // does not describe this one.
  job.clear_finished_at();
  job.clear_processing_time_ms();
  {
    absl::MutexLock lock(&mu_);
    task->job = job;
  }
  queue->queue_wait->Observe(absl::ToDoubleSeconds(started - task->arrived));
  // Not waited for: the publisher keeps it ahead of this job's results, and
  // the results are waited for before anything is recorded or acked.
  publisher_->PublishAsync(
      Encoded(LifecycleEvent(*task, job, "job.started", absl::StrCat("started.", job.attempt()))));

  JobHandler* handler = handlers_->Find(job.type());
  JobContext ctx{task->trigger,
                 job,
                 started + settings.timeout,
                 config_.payment_rule,
                 [this](const std::string& name) { return store_->NextCounter(name); },
                 &cancel_};
  absl::StatusOr<JobOutput> result =
      handler != nullptr ? handler->Run(ctx)
                         : absl::StatusOr<JobOutput>(absl::InternalError("no handler"));
  if (cancel_.HasBeenNotified()) {
    // Shutdown gave up on this job and handed its event back to the broker:
    // another worker runs it; record nothing here.
    absl::MutexLock lock(&mu_);
    queue->active.erase(job.id());
    held_.erase(job.id());
    UpdateGauges(job.queue(), *queue);
    return;
  }
  absl::Time finished = clock_->Now();
  absl::Duration took = finished - started;
  if (result.ok() && took > settings.timeout) {
    result = absl::DeadlineExceededError(
        absl::StrCat("timed out after ", absl::FormatDuration(settings.timeout)));
  }
  job.set_processing_time_ms(absl::ToInt64Milliseconds(took));
  *job.mutable_finished_at() = ToProto(finished);
  queue->duration->Observe(absl::ToDoubleSeconds(took));

  Finished f;
  f.took = took;
  if (result.ok()) {
    job.set_status(v1::JOB_STATUS_COMPLETED);
    for (size_t i = 0; i < result->events.size(); ++i) {
      events::v1::Event ev = std::move(result->events[i]);
      ev.set_id(DeriveId("evt", {job.id(), job.type(), absl::StrCat(i + 1)}));
      ev.set_source("job-worker");
      if (ev.correlation_id().empty()) ev.set_correlation_id(task->trigger.correlation_id());
      if (ev.subject().empty()) ev.set_subject(task->trigger.subject());
      if (ev.user_id().empty()) ev.set_user_id(task->trigger.user_id());
      f.events.Add(std::move(ev));
    }
    f.events.AddSerialized(LifecycleEvent(*task, job, "job.completed", "completed").Finish());
    f.outcome = "completed";
    f.ack = true;
  } else {
    // Bounded and valid UTF-8: it travels in job.failed, which the broker
    // would refuse otherwise.
    job.set_error(ValidUtf8Prefix(result.status().message(), kMaxJobErrorBytes));
    if (job.attempt() < job.max_attempts()) {
      double u;
      {
        absl::MutexLock lock(&mu_);
        u = absl::Uniform(rng_, 0.0, 1.0);
      }
      f.nack_delay = BackoffDelay(settings.backoff, job.attempt(), u);
      f.nack_reason = absl::StrCat("job ", job.id(), " attempt ", job.attempt(), " of ",
                                   job.max_attempts(), " failed: ", job.error());
      job.set_status(v1::JOB_STATUS_RETRY_SCHEDULED);
      *job.mutable_next_retry_at() = ToProto(finished + f.nack_delay);
      f.outcome = "retried";
      queue->retries->Increment();
    } else {
      job.set_status(v1::JOB_STATUS_FAILED);
      f.outcome = "failed";
      f.ack = true;
    }
    LogWarn("job attempt failed", {{"job_id", job.id()},
                                   {"job_type", job.type()},
                                   {"attempt", job.attempt()},
                                   {"final", f.ack},
                                   {"error", job.error()},
                                   {"correlation_id", job.correlation_id()}});
    WireEvent failed =
        LifecycleEvent(*task, job, "job.failed", absl::StrCat("failed.", job.attempt()));
    failed.Data("final", job.status() == v1::JOB_STATUS_FAILED);
    f.events.AddSerialized(failed.Finish());
  }
  {
    // Out of the running set (its thread takes the next job) but still held:
    // its deadline is extended, and shutdown waits for it.
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      // Shutdown stopped waiting and handed this job's event back while the
      // handler returned: another worker runs it; record nothing here.
      queue->active.erase(job.id());
      held_.erase(job.id());
      UpdateGauges(job.queue(), *queue);
      return;
    }
    task->job = job;
    queue->active.erase(job.id());
    queue->finishing[job.id()] = task;
    UpdateGauges(job.queue(), *queue);
  }
  f.task = task;
  f.queue = queue;
  f.job = std::move(job);
  absl::MutexLock lock(&finish_mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(finish_mu_) {
    return to_finish_.size() < kMaxUnfinished;
  };
  finish_mu_.Await(absl::Condition(&room));
  to_finish_.push_back(std::move(f));
}

void Worker::Ack(const std::string& ack_id) { acker_->Ack(ack_id); }

void Worker::ExtendDeadlinesLoop() {
  SetThreadName("sb-extend");
  absl::Duration every = options_.ack_deadline / 3;
  while (true) {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&extend_stop_), every)) return;
      for (auto& [id, t] : held_) ids.push_back(t->ack_id);
    }
    if (ids.empty()) continue;
    absl::Status s =
        broker_->ExtendAckDeadline(options_.group, ids, options_.ack_deadline, absl::Seconds(5));
    if (!s.ok()) LogWarn("extending ack deadlines failed", {{"error", s.ToString()}});
  }
}

bool Worker::Shutdown() {
  for (auto& s : subscriptions_) s->Stop();
  std::vector<std::string> hand_back;
  bool finished;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return true;
    draining_ = true;
    auto idle = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (auto& [name, q] : queues_) {
        if (!q.active.empty() || !q.finishing.empty()) return false;
      }
      return true;
    };
    finished = mu_.AwaitWithTimeout(absl::Condition(&idle), options_.drain_timeout);
    for (auto& [name, q] : queues_) {
      for (auto& t : q.waiting) {
        hand_back.push_back(t->ack_id);
        held_.erase(t->job.id());
      }
      q.waiting.clear();
      if (!finished) {
        for (auto& [id, t] : q.active) hand_back.push_back(t->ack_id);
      }
    }
    stopping_ = true;
    stopping_flag_ = true;
    for (auto& [name, q] : queues_) q.work.SignalAll();
  }
  // Past the drain time: running handlers are asked to return now (their
  // events were handed back above), so every thread can be joined.
  if (!finished) cancel_.Notify();
  // Waiting jobs go back to the group at once, for another worker.
  if (!hand_back.empty()) {
    absl::Status s = broker_->Nack(options_.group, hand_back, absl::ZeroDuration(),
                                   "the worker shut down before running the job", absl::Seconds(5));
    if (!s.ok()) LogWarn("handing back jobs failed", {{"error", s.ToString()}});
  }
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, q] : queues_) {
      for (auto& t : q.threads) threads.push_back(std::move(t));
      q.threads.clear();
    }
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  // Every run handed over: what is left to finish is finished, then the
  // finisher ends.
  {
    absl::MutexLock lock(&finish_mu_);
    finish_stop_ = true;
  }
  if (finisher_.joinable()) finisher_.join();
  {
    absl::MutexLock lock(&finish_mu_);
    record_stop_ = true;
  }
  if (recorder_.joinable()) recorder_.join();
  nacker_.reset();  // sends what was queued, then joins
  // Only now: a job waiting for the finisher keeps its deadline extended
  // until it was recorded, however long that took.
  {
    absl::MutexLock lock(&mu_);
    extend_stop_ = true;
  }
  if (extender_.joinable()) extender_.join();
  // After the join: a job that finished during the drain queues its ack only
  // after it left the active set (what the drain waited for).
  acker_->Flush();
  // Last: a sync pass in progress may be waiting on an unreachable store.
  if (syncer_.joinable()) syncer_.join();
  LogInfo("worker drained", {{"all_jobs_finished", finished},
                             {"handed_back", static_cast<uint64_t>(hand_back.size())}});
  return finished;
}

void Worker::UpdateGauges(const std::string& name, const Queue& q) {
  q.depth_gauge->Set(static_cast<double>(q.waiting.size()));
  q.in_flight_gauge->Set(static_cast<double>(q.active.size()));
}

void Worker::FillQueueStats(const Queue& q, v1::QueueStats* out) const {
  const std::string& name = q.settings.name;
  out->set_name(name);
  uint64_t processed = q.processed;
  double processing_ms = q.processing_ms_total;
  out->set_waiting(q.waiting.size());
  // Running handlers only (at most the concurrency): a job being recorded
  // shows in neither count for those milliseconds.
  out->set_active(q.active.size());
  if (store_->shared() && shared_.valid) {
    // The deployment's: records in the store, loads of the other workers
    // (as of the last sync) plus this one's.
    auto done = shared_.counts.find({name, v1::JOB_STATUS_COMPLETED});
    out->set_completed(done == shared_.counts.end() ? 0 : done->second);
    auto failed = shared_.counts.find({name, v1::JOB_STATUS_FAILED});
    out->set_failed(failed == shared_.counts.end() ? 0 : failed->second);
    auto r = shared_.retried.find(name);
    out->set_retried(r == shared_.retried.end() ? 0 : r->second);
    if (auto o = shared_.others.find(name); o != shared_.others.end()) {
      out->set_waiting(out->waiting() + o->second.waiting);
      out->set_active(out->active() + o->second.active);
      processed += o->second.processed;
      processing_ms += o->second.processing_ms_total;
    }
  } else {
    out->set_completed(q.completed);
    out->set_failed(q.failed);
    out->set_retried(q.retried);
  }
  out->set_avg_processing_ms(processed ? processing_ms / processed : 0);
  out->set_paused(q.paused);
  out->set_concurrency(q.settings.concurrency);
  out->set_global_concurrency(q.settings.global_concurrency);
}

v1::GetStatsResponse Worker::GetStats() {
  v1::GetStatsResponse resp;
  resp.set_worker_id(options_.worker_id);
  absl::MutexLock lock(&mu_);
  for (const auto& [name, q] : queues_) FillQueueStats(q, resp.add_queues());
  return resp;
}

absl::StatusOr<v1::ListJobsResponse> Worker::ListJobs(const v1::ListJobsRequest& req) {
  if (req.limit() > 1000) return absl::InvalidArgumentError("limit: at most 1000");
  if (!req.queue().empty()) {
    absl::MutexLock lock(&mu_);
    if (!queues_.count(req.queue())) {
      return absl::InvalidArgumentError(absl::StrCat("queue: no queue '", req.queue(), "'"));
    }
  }
  size_t limit = req.limit() ? req.limit() : 100;
  v1::ListJobsResponse resp;
  std::set<std::string> seen;
  auto wanted = [&](const v1::Job& j) {
    return (req.queue().empty() || j.queue() == req.queue()) &&
           (req.status() == v1::JOB_STATUS_UNSPECIFIED || j.status() == req.status()) &&
           (req.correlation_id().empty() || j.correlation_id() == req.correlation_id());
  };
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, q] : queues_) {
      for (const auto& [id, t] : q.active) {
        if (wanted(t->job) && resp.jobs_size() < static_cast<int>(limit)) {
          *resp.add_jobs() = t->job;
          seen.insert(id);
        }
      }
      for (const auto& t : q.waiting) {
        if (wanted(t->job) && resp.jobs_size() < static_cast<int>(limit)) {
          *resp.add_jobs() = t->job;
          seen.insert(t->job.id());
        }
      }
      for (const auto& [id, t] : q.finishing) {
        if (wanted(t->job) && resp.jobs_size() < static_cast<int>(limit)) {
          *resp.add_jobs() = t->job;
          seen.insert(id);
        }
      }
    }
  }
  JobQuery q{req.queue(), req.status(), req.correlation_id(), limit};
  absl::StatusOr<std::vector<v1::Job>> stored = store_->List(q);
  if (!stored.ok()) return stored.status();
  for (v1::Job& j : *stored) {
    if (resp.jobs_size() >= static_cast<int>(limit)) break;
    if (!seen.count(j.id())) *resp.add_jobs() = std::move(j);
  }
  return resp;
}

absl::StatusOr<v1::Job> Worker::GetJob(const v1::GetJobRequest& req) {
  if (req.id().empty()) return absl::InvalidArgumentError("id: required");
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, q] : queues_) {
      auto it = q.active.find(req.id());
      if (it != q.active.end()) return it->second->job;
      if (auto f = q.finishing.find(req.id()); f != q.finishing.end()) return f->second->job;
      for (const auto& t : q.waiting) {
        if (t->job.id() == req.id()) return t->job;
      }
    }
  }
  absl::StatusOr<std::optional<v1::Job>> job = store_->Get(req.id());
  if (!job.ok()) return job.status();
  if (!job->has_value()) return absl::NotFoundError(absl::StrCat("id: no job '", req.id(), "'"));
  return **job;
}

absl::StatusOr<v1::QueueStats> Worker::SetPaused(const std::string& queue, bool paused) {
  if (queue.empty()) return absl::InvalidArgumentError("queue: required");
  {
    absl::MutexLock lock(&mu_);
    if (!queues_.count(queue)) {
      return absl::NotFoundError(absl::StrCat("queue: no queue '", queue, "'"));
    }
  }
  // Stored first: every worker sharing the store follows within a sync, and
  // the pause outlives a restart.
  if (absl::Status s = store_->SetPaused(queue, paused); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(queue);
  it->second.paused = paused;
  ++it->second.pause_epoch;
  if (!paused) it->second.work.SignalAll();
  LogInfo(paused ? "queue paused" : "queue resumed", {{"queue", queue}});
  v1::QueueStats stats;
  FillQueueStats(it->second, &stats);
  return stats;
}

}  // namespace switchboard::jobs
