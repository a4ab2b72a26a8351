#include "services/event_broker/broker.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/backoff.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/thread_name.h"
#include "services/event_broker/local_group.h"
#include "services/event_broker/shared_group.h"

namespace switchboard::broker {

using google::protobuf::util::TimeUtil;

// ---------------------------------------------------------------------------
// Broker

Broker::Broker(BrokerConfig config, std::unique_ptr<EventStore> store, Clock* clock,
               BrokerMetrics* metrics)
    : config_(std::move(config)),
      store_(std::move(store)),
      clock_(clock),
      metrics_(metrics),
      replica_id_(config_.replica_id.empty() ? NewId("brk") : config_.replica_id) {}

absl::StatusOr<std::unique_ptr<Broker>> Broker::Create(BrokerConfig config,
                                                       std::unique_ptr<EventStore> store,
                                                       Clock* clock, BrokerMetrics* metrics) {
  std::unique_ptr<Broker> b(new Broker(std::move(config), std::move(store), clock, metrics));
  if (absl::Status s = b->Recover(); !s.ok()) return s;
  b->writer_ = std::thread([p = b.get()] { p->WriterLoop(); });
  b->filler_ = std::thread([p = b.get()] { p->FillLoop(); });
  if (b->config_.run_housekeeping)
    b->housekeeper_ = std::thread([p = b.get()] { p->HousekeepingLoop(); });
  if (b->store_->shared()) b->tailer_ = std::thread([p = b.get()] { p->TailLoop(); });
  return b;
}

absl::Status Broker::Recover() {
  absl::StatusOr<StoreBounds> bounds = store_->Bounds();
  if (!bounds.ok()) return bounds.status();
  last_seq_ = bounds->last_seq;
  if (store_->shared()) {
    // Group state stays in the store; groups are looked up when used.
    LogInfo(
        "store recovered",
        {{"last_sequence", last_seq_.load()}, {"events", bounds->count}, {"replica", replica_id_}});
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<GroupRecord>> groups = store_->LoadGroups();
  if (!groups.ok()) return groups.status();
  size_t restored = 0;
  for (GroupRecord& rec : *groups) {
    absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(rec.types);
    if (!filter.ok()) return filter.status();
    absl::StatusOr<uint64_t> dead = store_->CountDeadLetters(rec.name);
    if (!dead.ok()) return dead.status();
    absl::StatusOr<std::vector<PendingRecord>> pending = store_->LoadPending(rec.name);
    if (!pending.ok()) return pending.status();
    std::vector<std::pair<PendingRecord, EventPtr>> restore;
    for (const PendingRecord& p : *pending) {
      absl::StatusOr<EventPtr> ev = store_->ReadOne(p.seq);
      if (!ev.ok()) continue;  // removed by retention meanwhile
      restore.emplace_back(p, *std::move(ev));
    }
    restored += restore.size();
    std::string name = rec.name;
    auto group = std::make_shared<LocalGroup>(this, std::move(rec), *std::move(filter), *dead);
    group->Restore(std::move(restore));
    absl::MutexLock lock(&subs_mu_);
    groups_[name] = std::move(group);
  }
  LogInfo("store recovered", {{"last_sequence", last_seq_.load()},
                              {"events", bounds->count},
                              {"groups", static_cast<uint64_t>(groups->size())},
                              {"unacked_restored", static_cast<uint64_t>(restored)}});
  metrics_->last_sequence.Set(static_cast<double>(last_seq_.load()));
  return absl::OkStatus();
}

Broker::~Broker() { Shutdown(); }

void Broker::EndAllStreams(const absl::Status& status) {
  std::vector<std::shared_ptr<BroadcastSubscription>> subs;
  std::vector<std::shared_ptr<Group>> groups;
  {
    absl::MutexLock lock(&subs_mu_);
    for (auto& w : broadcasts_) {
      if (auto s = w.lock()) subs.push_back(std::move(s));
    }
    for (auto& [name, g] : groups_) groups.push_back(g);
  }
  for (auto& s : subs) s->End(status);
  for (auto& g : groups) g->EndAll(status);
}

void Broker::Shutdown() {
  bool was = shutting_down_.exchange(true);
  if (!was) EndAllStreams(absl::UnavailableError("broker is shutting down"));
  {
    absl::MutexLock lock(&hk_mu_);
    stop_hk_ = true;
  }
  if (housekeeper_.joinable()) housekeeper_.join();
  if (tailer_.joinable()) tailer_.join();
  {
    absl::MutexLock lock(&write_mu_);
    stop_writer_ = true;
  }
  if (writer_.joinable()) writer_.join();
  {
    absl::MutexLock lock(&fill_mu_);
    stop_fill_ = true;
  }
  if (filler_.joinable()) filler_.join();
}

absl::StatusOr<std::vector<NewEvent>> Broker::Prepare(absl::Span<events::v1::Event* const> events,
                                                      absl::string_view field) const {
  if (shutting_down_) return absl::UnavailableError("broker is shutting down");
  if (events.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty batch"));
  if (events.size() > config_.max_batch_events) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", events.size(),
                                                   " events in one batch, over the limit of ",
                                                   config_.max_batch_events));
  }
  bool single = field == "event";
  google::protobuf::Timestamp now = ToProtoTime(clock_->Now());
  std::vector<NewEvent> out(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    events::v1::Event& ev = *events[i];
    NewEvent& n = out[i];
    n.client_id = !ev.id().empty();
    if (!n.client_id) ev.set_id(NewId("evt"));
    if (!ev.has_time()) *ev.mutable_time() = now;
    ev.clear_sequence();
    absl::Status s =
        ValidateEventForPublish(ev, config_.max_event_bytes,
                                single ? std::string(field) : absl::StrCat(field, "[", i, "]"));
    if (!s.ok()) return s;
    // ValidateEventForPublish computed the size; serialize with it.
    n.payload.resize(ev.GetCachedSize());
    ev.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(n.payload.data()));
    n.type = ev.type();
    n.id = ev.id();
    n.source = ev.source();
    n.correlation_id = ev.correlation_id();
    n.subject = ev.subject();
    n.time_us = TimeUtil::TimestampToMicroseconds(ev.time());
  }
  return out;
}

void Broker::Append(std::vector<NewEvent> events, PublishCallback done) {
  size_t bytes = 0;
  for (const NewEvent& e : events) bytes += e.payload.size() + e.id.size() + e.type.size();
  absl::Status refused;
  {
    // Checked under the writer's lock: once the writer has stopped nothing
    // can be queued where it would never be answered.
    absl::MutexLock lock(&write_mu_);
    if (stop_writer_ || shutting_down_) {
      refused = absl::UnavailableError("broker is shutting down");
    } else if (queued_publish_bytes_ > 0 &&
               queued_publish_bytes_ + bytes > config_.max_queued_publish_bytes) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "publish queue full: ", queued_publish_bytes_, " bytes wait for the store (limit ",
          config_.max_queued_publish_bytes, "); retry with backoff"));
    } else {
      uint64_t ticket = ++enqueued_writes_;
      publish_queue_.push_back(
          PublishWork{std::move(events), std::move(done), absl::Now(), bytes, ticket});
      queued_publish_bytes_ += bytes;
      return;
    }
  }
  if (refused.code() == absl::StatusCode::kResourceExhausted) {
    metrics_->publishes_refused.Increment();
  }
  done(refused);
}

void Broker::Publish(std::vector<events::v1::Event> events, PublishCallback done) {
  std::vector<events::v1::Event*> ptrs;
  for (auto& e : events) ptrs.push_back(&e);
  absl::StatusOr<std::vector<NewEvent>> prepared =
      Prepare(absl::MakeSpan(ptrs), events.size() == 1 ? "event" : "events");
  if (!prepared.ok()) {
    done(prepared.status());
    return;
  }
  Append(*std::move(prepared), std::move(done));
}

absl::StatusOr<std::vector<PublishResult>> Broker::PublishAndWait(
    std::vector<events::v1::Event> events) {
  // Shared with the callback: it may run after this returned on a timeout.
  struct Wait {
    absl::Mutex mu;
    bool finished ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<std::vector<PublishResult>> result ABSL_GUARDED_BY(mu);
  };
  auto wait = std::make_shared<Wait>();
  Publish(std::move(events), [wait](absl::StatusOr<std::vector<PublishResult>> r) {
    absl::MutexLock lock(&wait->mu);
    wait->result = std::move(r);
    wait->finished = true;
  });
  absl::MutexLock lock(&wait->mu);
  if (!wait->mu.AwaitWithTimeout(absl::Condition(&wait->finished), config_.emission_timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "publish not committed within ", absl::FormatDuration(config_.emission_timeout),
        " (EVENT_EMISSION_TIMEOUT); it may still be stored"));
  }
  return std::move(wait->result);
}

void Broker::EnqueueOps(std::vector<GroupOp> ops) {
  if (ops.empty()) return;
  absl::MutexLock lock(&write_mu_);
  uint64_t ticket = ++enqueued_writes_;
  for (GroupOp& op : ops) op_queue_.push_back(QueuedOp{std::move(op), ticket, 0});
}

void Broker::FlushWrites() {
  absl::MutexLock lock(&write_mu_);
  uint64_t target = enqueued_writes_;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
    return durable_upto_ >= target || stop_writer_;
  };
  write_mu_.Await(absl::Condition(&done));
}

void Broker::WriterLoop() {
  SetThreadName("sb-writer");
  while (true) {
    std::deque<PublishWork> works;
    std::vector<QueuedOp> ops;
    uint64_t taken_upto;
    bool last_round;
    {
      absl::MutexLock lock(&write_mu_);
      // Group state is one ordered stream: while refused ops wait for their
      // retry, later ops wait behind them (an ack must not be stored before
      // the delivery it acks). Publishes go on meanwhile.
      auto ops_allowed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
        return retry_ops_.empty() || stop_writer_ || absl::Now() >= retry_ops_at_;
      };
      auto has_work = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
        return !publish_queue_.empty() || stop_writer_ ||
               ((!op_queue_.empty() || !retry_ops_.empty()) && ops_allowed());
      };
      // Timed: refused ops are retried after a pause even with nothing new.
      write_mu_.AwaitWithDeadline(absl::Condition(&has_work), retry_ops_at_);
      last_round = stop_writer_;
      if (last_round && publish_queue_.empty() && op_queue_.empty() && retry_ops_.empty()) return;
      size_t commit_bytes = 0;
      while (!publish_queue_.empty() &&
             (works.empty() ||
              commit_bytes + publish_queue_.front().bytes <= config_.max_commit_bytes)) {
        commit_bytes += publish_queue_.front().bytes;
        works.push_back(std::move(publish_queue_.front()));
        publish_queue_.pop_front();
      }
      // queued_publish_bytes_ keeps counting these until they are committed:
      // the bound covers the publishes in the commit as well as those queued.
      if (ops_allowed()) {
        // Tickets ascend: the retried ops first, then what queued since.
        ops.swap(retry_ops_);
        retry_ops_at_ = absl::InfiniteFuture();
        for (QueuedOp& op : op_queue_) ops.push_back(std::move(op));
        op_queue_.clear();
      }
      taken_upto = enqueued_writes_;
    }
    size_t taken_bytes = 0;
    for (const PublishWork& w : works) taken_bytes += w.bytes;
    std::vector<QueuedOp> retry = CommitOnce(works, std::move(ops));
    absl::MutexLock lock(&write_mu_);
    queued_publish_bytes_ -= taken_bytes;
    metrics_->queued_publish_bytes.Set(static_cast<double>(queued_publish_bytes_));
    if (last_round && !retry.empty() && publish_queue_.empty() && op_queue_.empty()) {
      metrics_->group_ops_dropped.Increment(static_cast<double>(retry.size()));
      LogError("group state changes not stored at shutdown (redeliveries may follow)",
               {{"ops", static_cast<uint64_t>(retry.size())}});
      retry.clear();
    }
    if (!retry.empty()) {
      int failures = 0;
      for (const QueuedOp& op : retry) failures = std::max(failures, op.failures);
      retry_ops_ = std::move(retry);
      retry_ops_at_ = absl::Now() + absl::Milliseconds(100) * (1 << std::min(failures + 1, 6));
    }
    uint64_t durable = taken_upto;
    // Publishes left for the next commit (over max_commit_bytes).
    if (!publish_queue_.empty()) durable = std::min(durable, publish_queue_.front().ticket - 1);
    for (const QueuedOp& op : retry_ops_) durable = std::min(durable, op.ticket - 1);
    for (const QueuedOp& op : op_queue_) durable = std::min(durable, op.ticket - 1);
    durable_upto_ = std::max(durable_upto_, durable);
  }
}

namespace {

// Drops group ops made moot by a later op on the same key within one commit
// (a delivery acked before it was ever written costs one delete, no insert).
std::vector<QueuedOp> Coalesce(std::vector<QueuedOp>& ops) {
  absl::flat_hash_map<std::string, size_t> last;
  std::vector<bool> skip(ops.size(), false);
  for (size_t i = 0; i < ops.size(); ++i) {
    const GroupOp& op = ops[i].op;
    std::string key;
    switch (op.kind) {
      case GroupOp::Kind::kSetCursor:
        key = absl::StrCat("c\x1f", op.group.name);
        break;
      case GroupOp::Kind::kSetPending:
      case GroupOp::Kind::kRemovePending:
        key = absl::StrCat("p\x1f", op.group.name, "\x1f", op.seq);
        break;
      default:
        continue;
    }
    auto [it, inserted] = last.try_emplace(key, i);
    if (inserted) continue;
    const GroupOp& prev = ops[it->second].op;
    skip[it->second] = true;
    // The surviving op stands for both: FlushWrites waits for the lower ticket.
    ops[i].ticket = std::min(ops[i].ticket, ops[it->second].ticket);
    if (op.kind == GroupOp::Kind::kRemovePending && prev.kind == GroupOp::Kind::kSetPending &&
        prev.first_write && ops[it->second].failures == 0) {
      // Delivered and acked within one commit: nothing to write at all.
      skip[i] = true;
      last.erase(it);
      continue;
    }
    it->second = i;
  }
  std::vector<QueuedOp> out;
  out.reserve(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!skip[i]) out.push_back(std::move(ops[i]));
  }
  return out;
}

std::vector<GroupOp> TakeOps(std::vector<QueuedOp>& ops) {
  std::vector<GroupOp> out;
  out.reserve(ops.size());
  for (QueuedOp& q : ops) out.push_back(std::move(q.op));
  return out;
}

void GiveBackOps(std::vector<GroupOp>& from, std::vector<QueuedOp>& to) {
  for (size_t i = 0; i < from.size(); ++i) to[i].op = std::move(from[i]);
}

}  // namespace

namespace {

// Ops with the same key must be stored in order: a later one may undo an
// earlier one (ack after delivery, replay after dead-lettering, cursor after
// the group's creation).
std::string OrderKey(const GroupOp& op) {
  switch (op.kind) {
    case GroupOp::Kind::kUpsertGroup:
    case GroupOp::Kind::kSetCursor:
      return absl::StrCat("g\x1f", op.group.name);
    default:
      return absl::StrCat("s\x1f", op.group.name, "\x1f", op.seq);
  }
}

}  // namespace

std::vector<QueuedOp> Broker::CommitOpsAlone(std::vector<QueuedOp> ops, absl::Time now,
                                             bool store_works) {
  std::vector<QueuedOp> retry;
  if (ops.empty()) return retry;
  WriteBatch batch;
  batch.ops = TakeOps(ops);
  if (store_->Commit(batch, now).ok()) return retry;
  GiveBackOps(batch.ops, ops);
  // One op may be what the store refuses: apply them one by one so the
  // others are stored. Behind a refused op, later ops on its key wait (in
  // order) without being tried.
  absl::flat_hash_set<std::string> held;
  std::vector<bool> refused(ops.size(), false);
  absl::Status last_error;
  for (size_t i = 0; i < ops.size(); ++i) {
    std::string key = OrderKey(ops[i].op);
    if (held.contains(key)) continue;
    WriteBatch one;
    one.ops.push_back(ops[i].op);
    absl::StatusOr<CommitResult> r = store_->Commit(one, now);
    if (r.ok()) {
      store_works = true;
      ops[i].ticket = 0;  // stored
      continue;
    }
    refused[i] = true;
    last_error = r.status();
    held.insert(std::move(key));
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    QueuedOp& q = ops[i];
    if (q.ticket == 0) continue;
    // Refusals count against an op once the store was seen storing other
    // writes while refusing it: during an outage every op waits, however
    // long, and nothing is dropped.
    if (refused[i] && store_works) q.refused_while_store_worked = true;
    if (refused[i] && q.refused_while_store_worked && ++q.failures >= config_.max_op_failures) {
      metrics_->group_ops_dropped.Increment();
      LogError("group state change dropped after repeated store refusals",
               {{"group", q.op.group.name},
                {"sequence", q.op.seq},
                {"kind", static_cast<int>(q.op.kind)},
                {"error", last_error.ToString()}});
      continue;
    }
    retry.push_back(std::move(q));
  }
  return retry;
}

std::vector<QueuedOp> Broker::CommitOnce(std::deque<PublishWork>& works,
                                         std::vector<QueuedOp> queued_ops) {
  absl::Time now = clock_->Now();
  std::vector<std::vector<PublishResult>> results(works.size());
  WriteBatch batch;
  std::vector<std::pair<size_t, size_t>> where;  // (work, index) per batch event
  for (size_t w = 0; w < works.size(); ++w) {
    results[w].resize(works[w].events.size());
    for (size_t i = 0; i < works[w].events.size(); ++i) {
      where.emplace_back(w, i);
      batch.events.push_back(&works[w].events[i]);
    }
  }
  std::vector<QueuedOp> ops = Coalesce(queued_ops);
  std::vector<QueuedOp> retry;
  batch.ops = TakeOps(ops);
  batch.seq_floor = std::max(last_seq_.load(), committed_seq_.load());
  absl::Time t0 = absl::Now();
  absl::StatusOr<CommitResult> commit = store_->Commit(batch, now);
  if (!commit.ok() && !batch.ops.empty()) {
    // Group state must never fail the publishes riding with it: commit the
    // events alone, and the ops apart (isolating any the store refuses).
    LogWarn("store commit failed; committing events and group state apart",
            {{"error", commit.status().ToString()}});
    GiveBackOps(batch.ops, ops);
    batch.ops.clear();
    commit = batch.events.empty() ? absl::StatusOr<CommitResult>(CommitResult{})
                                  : store_->Commit(batch, now);
    retry = CommitOpsAlone(std::move(ops), now, !batch.events.empty() && commit.ok());
  }
  metrics_->commit_latency.Observe(absl::ToDoubleSeconds(absl::Now() - t0));
  if (!commit.ok()) {
    LogError("store commit failed", {{"error", commit.status().ToString()},
                                     {"events", static_cast<uint64_t>(batch.events.size())}});
    for (PublishWork& w : works)
      w.done(
          absl::UnavailableError(absl::StrCat("store commit failed: ", commit.status().message())));
    return retry;
  }
  std::vector<EventPtr> committed;
  committed.reserve(batch.events.size());
  if (!batch.events.empty()) {
    metrics_->commit_events.Observe(static_cast<double>(batch.events.size()));
    uint64_t seq = commit->first;
    for (size_t k = 0; k < batch.events.size(); ++k) {
      auto [w, i] = where[k];
      NewEvent& n = works[w].events[i];
      if (k < commit->duplicate_of.size() && commit->duplicate_of[k] != 0) {
        results[w][i] = PublishResult{n.id, commit->duplicate_of[k], true};
        metrics_->duplicates.Increment();
        continue;
      }
      results[w][i] = PublishResult{n.id, seq, false};
      auto stored = std::make_shared<StoredEvent>();
      stored->seq = seq++;
      stored->ingest_time = now;
      stored->type = n.type;
      stored->payload = std::move(n.payload);
      auto& counter = published_by_type_[stored->type];
      if (counter == nullptr) counter = &metrics_->events_published.Add({{"type", stored->type}});
      counter->Increment();
      committed.push_back(std::move(stored));
    }
    if (!committed.empty()) {
      RecordRate(now, committed.size());
      uint64_t top = committed.back()->seq;
      uint64_t seen = committed_seq_.load();
      while (top > seen && !committed_seq_.compare_exchange_weak(seen, top)) {
      }
    }
  }
  // Subscribers first: their latency is the product; the acks follow within
  // microseconds. On a shared store the tail thread hands every replica's
  // appends (these included, from own_) to subscribers, in sequence order.
  if (!committed.empty()) {
    if (!store_->shared()) {
      Deliver(committed);
    } else {
      absl::MutexLock lock(&own_mu_);
      // Bounded: past it the tail reads them back from the store instead.
      if (own_.size() < 100000) {
        for (const EventPtr& ev : committed) own_.emplace(ev->seq, ev);
      }
    }
  }
  absl::Time acked = absl::Now();
  for (size_t w = 0; w < works.size(); ++w) {
    metrics_->publish_latency.Observe(absl::ToDoubleSeconds(acked - works[w].received));
    works[w].done(std::move(results[w]));
  }
  return retry;
}

// Appended events (contiguous, ascending) into the tail cache and to the
// subscribers.
void Broker::Deliver(const std::vector<EventPtr>& events) {
  uint64_t prev_last = last_seq_.load();
  {
    absl::MutexLock lock(&cache_mu_);
    // The cache is indexed by offset, so it must stay contiguous. A commit
    // whose outcome was unknown (a Redis timeout after Redis applied it) or
    // retention between two reads leaves a hole: start the cache over.
    if (!cache_.empty() && cache_.back()->seq + 1 != events.front()->seq) cache_.clear();
    for (const EventPtr& ev : events) cache_.push_back(ev);
    while (cache_.size() > config_.cache_events) cache_.pop_front();
  }
  last_seq_ = events.back()->seq;
  metrics_->last_sequence.Set(static_cast<double>(events.back()->seq));
  Dispatch(events, prev_last);
}

// Shared stores only: follows the log, so subscribers here see what every
// replica appends, in sequence order. This replica's own commits are taken
// from `own_` without reading them back: sequences are contiguous, so when
// the next one is ours no other replica appended before it. The store is
// asked only for what is not ours (or when nothing of ours is waiting).
void Broker::TailLoop() {
  SetThreadName("sb-tail");
  Backoff backoff(BackoffPolicy{absl::Milliseconds(100), 2.0, absl::Seconds(2), 0.2});
  while (!shutting_down_.load()) {
    uint64_t last = last_seq_.load();
    std::vector<EventPtr> mine;
    uint64_t next_mine = 0;  // our lowest waiting sequence past a gap (0: none)
    {
      absl::MutexLock lock(&own_mu_);
      auto forget_seen = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(own_mu_) {
        while (!own_.empty() && own_.begin()->first <= last) own_.erase(own_.begin());
      };
      forget_seen();
      if (own_.empty()) {
        // A commit of ours may be on its way: a short wait saves a read.
        auto arrived = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(own_mu_) {
          return !own_.empty() || shutting_down_.load();
        };
        own_mu_.AwaitWithTimeout(absl::Condition(&arrived), absl::Milliseconds(2));
        forget_seen();
      }
      uint64_t next = last + 1;
      while (!own_.empty() && own_.begin()->first == next && mine.size() < 1024) {
        mine.push_back(std::move(own_.begin()->second));
        own_.erase(own_.begin());
        ++next;
      }
      if (mine.empty() && !own_.empty()) next_mine = own_.begin()->first;
    }
    if (!mine.empty()) {
      metrics_->tail_local.Increment(static_cast<double>(mine.size()));
      Deliver(mine);
      continue;
    }
    // What others appended before our next one exists already (sequences are
    // assigned in the commit that stores them): no need to block for it.
    size_t want = next_mine != 0 ? std::min<uint64_t>(256, next_mine - last - 1) : 256;
    absl::Duration block = next_mine != 0 ? absl::Milliseconds(1) : absl::Milliseconds(100);
    absl::StatusOr<std::vector<EventPtr>> evs =
        store_->WaitForAppends(last, std::max<size_t>(want, 1), block);
    if (!evs.ok()) {
      LogWarn("following the store's log failed", {{"error", evs.status().ToString()}});
      absl::MutexLock lock(&hk_mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(hk_mu_) { return stop_hk_; };
      hk_mu_.AwaitWithTimeout(absl::Condition(&stopping), backoff.Next());
      continue;
    }
    backoff.Reset();
    if (!evs->empty()) {
      metrics_->tail_read.Increment(static_cast<double>(evs->size()));
      Deliver(*evs);
    }
  }
}

void Broker::Dispatch(const std::vector<EventPtr>& events, uint64_t prev_last) {
  std::vector<std::shared_ptr<BroadcastSubscription>> subs;
  std::vector<std::shared_ptr<Group>> groups;
  {
    absl::MutexLock lock(&subs_mu_);
    subs.reserve(broadcasts_.size());
    size_t live = 0;
    for (size_t i = 0; i < broadcasts_.size(); ++i) {
      std::shared_ptr<BroadcastSubscription> s = broadcasts_[i].lock();
      if (s == nullptr) continue;
      broadcasts_[live++] = broadcasts_[i];
      subs.push_back(std::move(s));
    }
    broadcasts_.resize(live);
    for (auto& [name, g] : groups_) groups.push_back(g);
  }
  for (auto& s : subs) s->OfferLive(events, prev_last);
  for (auto& g : groups) g->OfferLive(events, prev_last);
}

void Broker::RecordRate(absl::Time now, uint64_t n) {
  int64_t sec = absl::ToUnixSeconds(now);
  absl::MutexLock lock(&rate_mu_);
  if (rate_.empty() || rate_.back().first != sec) rate_.emplace_back(sec, 0);
  rate_.back().second += n;
  while (!rate_.empty() && rate_.front().first < sec - 10) rate_.pop_front();
}

void Broker::RequestFill(std::function<void()> fill) {
  absl::MutexLock lock(&fill_mu_);
  fill_queue_.push_back(std::move(fill));
}

void Broker::FillLoop() {
  SetThreadName("sb-filler");
  // At shutdown what is queued still runs (shared groups give deliveries
  // back, so other replicas need not wait for the leases), for a while.
  absl::Time give_up = absl::InfiniteFuture();
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&fill_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fill_mu_) {
        return !fill_queue_.empty() || stop_fill_;
      };
      fill_mu_.Await(absl::Condition(&ready));
      if (stop_fill_) {
        if (give_up == absl::InfiniteFuture()) give_up = absl::Now() + absl::Seconds(2);
        if (fill_queue_.empty() || absl::Now() >= give_up) return;
      }
      task = std::move(fill_queue_.front());
      fill_queue_.pop_front();
    }
    task();
  }
}

void Broker::HousekeepingLoop() {
  SetThreadName("sb-housekeeper");
  while (true) {
    {
      absl::MutexLock lock(&hk_mu_);
      if (hk_mu_.AwaitWithTimeout(absl::Condition(&stop_hk_), config_.housekeeping_interval)) {
        return;
      }
    }
    Tick();
  }
}

void Broker::Tick() {
  absl::Time now = clock_->Now();
  {
    // First: readiness must not wait behind group upkeep on a slow store.
    absl::MutexLock lock(&tick_mu_);
    if (absl::Now() >= next_check_) {
      next_check_ = absl::Now() + absl::Seconds(1);
      absl::Status st = store_->Check();
      if (st.ok() != store_reachable_.exchange(st.ok())) {
        if (st.ok()) {
          LogInfo("store reachable again");
        } else {
          LogError("store unreachable", {{"error", st.ToString()}});
          // Streams would stay silent: end them so clients reconnect (to a
          // replica that can serve, or here once the store is back).
          if (store_->shared()) {
            EndAllStreams(absl::UnavailableError(
                absl::StrCat("event-broker: store unreachable: ", st.message())));
          }
        }
      }
    }
  }
  // On a shared store group upkeep is store calls: none while it cannot be
  // reached (each would wait for the timeout).
  bool store_usable = !store_->shared() || store_reachable_.load();
  if (store_usable) {
    std::vector<std::shared_ptr<Group>> groups;
    {
      absl::MutexLock lock(&subs_mu_);
      for (auto& [name, g] : groups_) groups.push_back(g);
    }
    uint64_t last = last_seq_.load();
    for (auto& g : groups) {
      g->Expire(now);
      g->UpdateGauges(last);
    }
  }
  absl::MutexLock lock(&tick_mu_);
  if (absl::Now() >= next_maintenance_) {
    next_maintenance_ = absl::Now() + absl::Milliseconds(200);
    store_->Maintain();
  }
  if (store_->shared() && store_usable && absl::Now() >= next_load_) {
    next_load_ = absl::Now() + config_.load_interval;
    if (absl::Status st = store_->PublishLoad(LocalLoad(), 3 * config_.load_interval); !st.ok()) {
      LogWarn("cannot publish this replica's load", {{"error", st.ToString()}});
    }
  }
  if (now >= next_retention_) {
    next_retention_ = now + config_.retention_interval;
    RunRetention(now);
  }
}

// In chunks, each its own short store transaction, so commits interleave
// with a large deletion instead of waiting behind it.
void Broker::RunRetention(absl::Time now) {
  uint64_t total = 0;
  while (!shutting_down_) {
    absl::StatusOr<uint64_t> deleted = store_->ApplyRetention(
        now, config_.retention_age, config_.retention_count, config_.retention_chunk);
    if (!deleted.ok()) {
      LogError("retention failed", {{"error", deleted.status().ToString()}});
      break;
    }
    total += *deleted;
    metrics_->retention_deleted.Increment(static_cast<double>(*deleted));
    if (*deleted < config_.retention_chunk) break;
  }
  if (total > 0) LogInfo("retention removed events", {{"deleted", total}});
  metrics_->storage_bytes.Set(static_cast<double>(store_->StorageBytes()));
  if (absl::StatusOr<StoreBounds> b = store_->Bounds(); b.ok()) {
    metrics_->stored_events.Set(static_cast<double>(b->count));
  }
}

absl::StatusOr<std::vector<EventPtr>> Broker::ReadEvents(uint64_t after_seq, size_t limit) {
  {
    absl::MutexLock lock(&cache_mu_);
    if (!cache_.empty() && after_seq + 1 >= cache_.front()->seq) {
      std::vector<EventPtr> out;
      size_t start = after_seq + 1 - cache_.front()->seq;
      for (size_t i = start; i < cache_.size() && out.size() < limit; ++i) out.push_back(cache_[i]);
      return out;
    }
  }
  return store_->ReadAfter(after_seq, limit);
}

void Broker::SubscriberCountChanged(int delta) {
  absl::MutexLock lock(&subs_mu_);
  subscriber_count_ += delta;
  metrics_->active_subscribers.Set(subscriber_count_);
}

}  // namespace switchboard::broker
