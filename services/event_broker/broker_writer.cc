// The publish path's writer thread: takes queued publishes and group-state
// changes, commits them to the store, answers the publishers and hands the
// committed events to delivery.
#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "libs/common/json_log.h"
#include "libs/common/thread_name.h"
#include "services/event_broker/broker.h"

namespace switchboard::broker {

// A publish-only commit sent to the store and not answered yet.
struct Broker::InFlight {
  std::deque<PublishWork> works;
  std::unique_ptr<PendingCommit> pending;
  absl::Time now;
  absl::Time sent;
  uint64_t taken_upto = 0;
  size_t taken_bytes = 0;
};

void Broker::WriterLoop() {
  SetThreadName("sb-writer");
  // With a store that pipelines commits, a commit of publishes is sent and
  // the next one prepared and sent before the first is answered: the
  // broker's work and the store's overlap. Group ops never ride in a
  // pipelined commit (their order matters), and nothing is sent ahead when
  // the queue is empty (waiting for the answer costs nothing then).
  std::unique_ptr<InFlight> inflight;
  while (true) {
    std::deque<PublishWork> works;
    std::vector<QueuedOp> ops;
    uint64_t taken_upto;
    bool last_round;
    // Group state is one ordered stream: while refused ops wait for their
    // retry, later ops wait behind them (an ack must not be stored before
    // the delivery it acks). Publishes go on meanwhile.
    auto ops_allowed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
      return retry_ops_.empty() || stop_writer_ || absl::Now() >= retry_ops_at_;
    };
    auto ops_due = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
      return (!op_queue_.empty() || !retry_ops_.empty()) && ops_allowed();
    };
    if (inflight != nullptr) {
      bool answer_first;
      {
        absl::MutexLock lock(&write_mu_);
        answer_first = publish_queue_.empty() || ops_due() || stop_writer_;
      }
      if (answer_first) {
        FinishInFlight(*inflight, 0);
        inflight.reset();
        continue;
      }
    }
    {
      absl::MutexLock lock(&write_mu_);
      auto has_work = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
        return (!publish_queue_.empty() || stop_writer_ || ops_due()) && !writer_busy_;
      };
      // Timed: refused ops are retried after a pause even with nothing new.
      if (inflight == nullptr) {
        write_mu_.AwaitWithDeadline(absl::Condition(&has_work), retry_ops_at_);
      }
      // A publisher's thread is committing (Append): after it.
      if (writer_busy_) continue;
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
      if (inflight == nullptr && ops_allowed()) {
        // Tickets ascend: the retried ops first, then what queued since.
        ops.swap(retry_ops_);
        retry_ops_at_ = absl::InfiniteFuture();
        for (QueuedOp& op : op_queue_) ops.push_back(std::move(op));
        op_queue_.clear();
      }
      taken_upto = enqueued_writes_;
      // (Pipelining stores never commit inline: nothing to keep out.)
      writer_busy_ = inline_commits_;
      if (works.size() > 1 || (works.size() == 1 && !publish_queue_.empty())) {
        lone_commits_ = 0;
      } else if (works.size() == 1) {
        lone_commits_ = std::min(lone_commits_ + 1, kInlineAfterLoneCommits);
      }
    }
    size_t taken_bytes = 0;
    for (const PublishWork& w : works) taken_bytes += w.bytes;
    if (ops.empty() && !works.empty() && store_->pipelines_commits()) {
      auto next = StartInFlight(std::move(works), taken_upto, taken_bytes);
      if (inflight != nullptr) FinishInFlight(*inflight, next->works.front().ticket);
      inflight = std::move(next);
      continue;
    }
    std::vector<QueuedOp> retry = CommitOnce(works, std::move(ops));
    AfterCommit(taken_bytes, taken_upto, std::move(retry), last_round, 0);
  }
}

WriteBatch Broker::PublishBatch(std::deque<PublishWork>& works) const {
  WriteBatch batch;
  for (PublishWork& w : works) {
    for (NewEvent& ev : w.events) batch.events.push_back(&ev);
  }
  batch.seq_floor = std::max(last_seq_.load(), committed_seq_.load());
  return batch;
}

std::unique_ptr<Broker::InFlight> Broker::StartInFlight(std::deque<PublishWork> works,
                                                        uint64_t taken_upto, size_t taken_bytes) {
  auto c = std::make_unique<InFlight>();
  c->works = std::move(works);
  c->taken_upto = taken_upto;
  c->taken_bytes = taken_bytes;
  c->now = clock_->Now();
  WriteBatch batch = PublishBatch(c->works);
  c->sent = absl::Now();
  OwnCommitStarted(c->works);
  c->pending = store_->StartCommit(batch, c->now);
  return c;
}

void Broker::FinishInFlight(InFlight& c, uint64_t newer_first_ticket) {
  absl::StatusOr<CommitResult> commit = c.pending->Wait();
  metrics_->commit_latency.Observe(absl::ToDoubleSeconds(absl::Now() - c.sent));
  AnswerPublishes(c.works, commit, c.now);
  AfterCommit(c.taken_bytes, c.taken_upto, {}, false, newer_first_ticket);
}

void Broker::AfterCommit(size_t taken_bytes, uint64_t taken_upto, std::vector<QueuedOp> retry,
                         bool last_round, uint64_t newer_first_ticket) {
  absl::MutexLock lock(&write_mu_);
  // The commit is over (with durable_upto_ below, in one step: once
  // FlushWrites returns, the next publish may be committed inline).
  writer_busy_ = false;
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
  // Publishes left for the next commit (over max_commit_bytes), or sent in
  // a commit not answered yet.
  if (!publish_queue_.empty()) durable = std::min(durable, publish_queue_.front().ticket - 1);
  if (newer_first_ticket != 0) durable = std::min(durable, newer_first_ticket - 1);
  for (const QueuedOp& op : retry_ops_) durable = std::min(durable, op.ticket - 1);
  for (const QueuedOp& op : op_queue_) durable = std::min(durable, op.ticket - 1);
  durable_upto_ = std::max(durable_upto_, durable);
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
  WriteBatch batch = PublishBatch(works);
  std::vector<QueuedOp> ops = Coalesce(queued_ops);
  std::vector<QueuedOp> retry;
  batch.ops = TakeOps(ops);
  absl::Time t0 = absl::Now();
  OwnCommitStarted(works);
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
  AnswerPublishes(works, commit, now);
  return retry;
}

void Broker::OwnCommitStarted(const std::deque<PublishWork>& works) {
  if (works.empty() || !store_->shared()) return;
  absl::MutexLock lock(&own_mu_);
  ++own_in_flight_;
}

void Broker::AnswerPublishes(std::deque<PublishWork>& works,
                             const absl::StatusOr<CommitResult>& commit, absl::Time now) {
  size_t n = 0;
  for (const PublishWork& w : works) n += w.events.size();
  bool own_counted = !works.empty() && store_->shared();
  if (own_counted && !commit.ok()) {
    absl::MutexLock lock(&own_mu_);
    --own_in_flight_;
  }
  if (!commit.ok()) {
    LogError("store commit failed",
             {{"error", commit.status().ToString()}, {"events", static_cast<uint64_t>(n)}});
    for (PublishWork& w : works)
      w.done(
          absl::UnavailableError(absl::StrCat("store commit failed: ", commit.status().message())));
    return;
  }
  std::vector<std::vector<PublishResult>> results(works.size());
  std::vector<EventPtr> committed;
  committed.reserve(n);
  if (n > 0) {
    metrics_->commit_events.Observe(static_cast<double>(n));
    uint64_t seq = commit->first;
    size_t k = 0;
    // Per-type counters are bumped once per run of one type, not per event.
    prometheus::Counter* run_counter = nullptr;
    double run = 0;
    for (size_t w = 0; w < works.size(); ++w) {
      results[w].resize(works[w].events.size());
      for (size_t i = 0; i < works[w].events.size(); ++i, ++k) {
        NewEvent& e = works[w].events[i];
        if (k < commit->duplicate_of.size() && commit->duplicate_of[k] != 0) {
          results[w][i] = PublishResult{std::move(e.id), commit->duplicate_of[k], true};
          metrics_->duplicates.Increment();
          continue;
        }
        results[w][i] = PublishResult{std::move(e.id), seq, false};
        auto stored = std::make_shared<StoredEvent>();
        stored->seq = seq++;
        stored->ingest_time = now;
        stored->type = std::move(e.type);
        stored->payload = std::move(e.payload);
        if (committed.empty() || committed.back()->type != stored->type) {
          if (run_counter != nullptr) run_counter->Increment(run);
          auto& counter = published_by_type_[stored->type];
          if (counter == nullptr) {
            counter = &metrics_->events_published.Add({{"type", stored->type}});
          }
          run_counter = counter;
          run = 0;
        }
        ++run;
        committed.push_back(std::move(stored));
      }
    }
    if (run_counter != nullptr) run_counter->Increment(run);
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
  if (!store_->shared()) {
    if (!committed.empty()) Deliver(committed);
  } else if (own_counted) {
    absl::MutexLock lock(&own_mu_);
    --own_in_flight_;
    // Bounded: past it the tail reads them back from the store instead.
    if (own_.size() < 100000) {
      for (const EventPtr& ev : committed) own_.emplace(ev->seq, ev);
    }
  }
  absl::Time acked = absl::Now();
  for (size_t w = 0; w < works.size(); ++w) {
    metrics_->publish_latency.Observe(absl::ToDoubleSeconds(acked - works[w].received));
    works[w].done(std::move(results[w]));
  }
}

}  // namespace switchboard::broker
