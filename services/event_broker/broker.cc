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
      replica_id_(config_.replica_id.empty() ? NewId("brk") : config_.replica_id),
      inline_commits_(store_->commits_now() && !store_->shared() && !store_->pipelines_commits()) {}

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

absl::StatusOr<std::vector<NewEvent>> Broker::Prepare(absl::Span<internal::RawEvent* const> events,
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
    internal::RawEvent& ev = *events[i];
    NewEvent& n = out[i];
    n.client_id = !ev.id().empty();
    if (!n.client_id) ev.set_id(NewId("evt"));
    if (!ev.has_time()) *ev.mutable_time() = now;
    ev.clear_sequence();
    // Checked as deep as an event travels: DeliveryBatch → deliveries →
    // event → data (SubscribeBatched; ListDeadLetters is as deep), one level
    // more than in the publish request, so that every subscriber can parse
    // what was accepted.
    absl::Status s = ValidateEventForPublish(
        ev, config_.max_event_bytes, single ? std::string(field) : absl::StrCat(field, "[", i, "]"),
        /*data_depth=*/3);
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
  uint64_t ticket = 0;
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
      ticket = ++enqueued_writes_;
      queued_publish_bytes_ += bytes;
      // Committed here when nothing waits to be batched with it or before
      // it; else queued for the writer.
      bool alone = inline_commits_ && !writer_busy_ && lone_commits_ >= kInlineAfterLoneCommits &&
                   bytes <= kMaxInlineBytes && publish_queue_.empty() && op_queue_.empty() &&
                   retry_ops_.empty();
      if (!alone) {
        publish_queue_.push_back(
            PublishWork{std::move(events), std::move(done), absl::Now(), bytes, ticket});
        return;
      }
      writer_busy_ = true;
    }
  }
  if (!refused.ok()) {
    if (refused.code() == absl::StatusCode::kResourceExhausted) {
      metrics_->publishes_refused.Increment();
    }
    done(refused);
    return;
  }
  CommitInline(PublishWork{std::move(events), std::move(done), absl::Now(), bytes, ticket});
}

void Broker::CommitInline(PublishWork work) {
  std::deque<PublishWork> works;
  works.push_back(std::move(work));
  absl::Time now = clock_->Now();
  WriteBatch batch = PublishBatch(works);
  absl::Time t0 = absl::Now();
  std::optional<absl::StatusOr<CommitResult>> commit = store_->TryCommitNow(batch, now);
  if (!commit.has_value()) {
    // The store would have made this thread wait: the writer commits it, as
    // the oldest write (nothing was taken meanwhile: writer_busy_).
    absl::MutexLock lock(&write_mu_);
    publish_queue_.push_front(std::move(works.front()));
    writer_busy_ = false;
    return;
  }
  metrics_->commit_latency.Observe(absl::ToDoubleSeconds(absl::Now() - t0));
  metrics_->inline_commits.Increment();
  size_t bytes = works.front().bytes;
  uint64_t ticket = works.front().ticket;
  AnswerPublishes(works, *commit, now);
  {
    // Others arrived meanwhile: publishers come together, the writer batches.
    absl::MutexLock lock(&write_mu_);
    lone_commits_ =
        publish_queue_.empty() ? std::min(lone_commits_ + 1, kInlineAfterLoneCommits) : 0;
  }
  AfterCommit(bytes, ticket, {}, false, 0);
}

void Broker::Publish(std::vector<events::v1::Event> events, PublishCallback done) {
  // The JSON API and tests hold parsed events: Prepare takes them as bytes.
  std::vector<internal::RawEvent> raw(events.size());
  std::vector<internal::RawEvent*> ptrs;
  for (size_t i = 0; i < events.size(); ++i) {
    if (!raw[i].ParseFromString(events[i].SerializeAsString())) {
      done(absl::InvalidArgumentError(absl::StrCat("events[", i, "]: not a valid event")));
      return;
    }
    ptrs.push_back(&raw[i]);
  }
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
  constexpr absl::Duration kMaxOwnWait = absl::Milliseconds(50);
  absl::Time last_read = absl::Now();  // or delivered from own_
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
      // Our commits that yield nothing here (failed after Redis applied
      // them, or all duplicates) must not keep the tail from the store:
      // it reads at least every kMaxOwnWait.
      bool may_wait = absl::Now() - last_read < kMaxOwnWait;
      if (own_.empty() && own_in_flight_ > 0 && may_wait) {
        // Our commit is being applied: what appears in the store now is
        // most likely its events, delivered from own_ when it is answered
        // rather than read back. Others' appends before them show up as a
        // gap below our next sequence and are read then.
        auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(own_mu_) {
          return !own_.empty() || own_in_flight_ == 0 || shutting_down_.load();
        };
        own_mu_.AwaitWithTimeout(absl::Condition(&answered), kMaxOwnWait);
        forget_seen();
        if (own_.empty() && own_in_flight_ > 0) continue;
      }
      if (own_.empty() && may_wait) {
        // A commit of ours may be on its way: a short wait saves a read.
        auto arrived = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(own_mu_) {
          return !own_.empty() || own_in_flight_ > 0 || shutting_down_.load();
        };
        own_mu_.AwaitWithTimeout(absl::Condition(&arrived), absl::Milliseconds(2));
        forget_seen();
        if (own_.empty() && own_in_flight_ > 0) continue;
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
      last_read = absl::Now();
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
    last_read = absl::Now();
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
