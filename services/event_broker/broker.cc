#include "services/event_broker/broker.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "libs/common/ids.h"
#include "libs/common/json_log.h"
#include "libs/common/proto_time.h"
#include "libs/common/thread_name.h"

namespace switchboard::broker {

using google::protobuf::util::TimeUtil;

namespace {

constexpr size_t kFillReadChunk = 512;
constexpr size_t kFillMaxScan = 8192;

std::string MakeAckId(uint64_t seq, uint32_t attempt) { return absl::StrCat(seq, "-", attempt); }

bool ParseAckId(absl::string_view id, uint64_t* seq, uint32_t* attempt) {
  size_t dash = id.find('-');
  if (dash == absl::string_view::npos) return false;
  return absl::SimpleAtoi(id.substr(0, dash), seq) && *seq > 0 &&
         absl::SimpleAtoi(id.substr(dash + 1), attempt) && *attempt > 0;
}

google::protobuf::Timestamp ToProto(absl::Time t) { return ToProtoTime(t); }
absl::Time FromProto(const google::protobuf::Timestamp& t) { return FromProtoTime(t); }
absl::Duration FromProto(const google::protobuf::Duration& d) { return FromProtoDuration(d); }

std::string DedupeKey(absl::string_view source, absl::string_view id) {
  return absl::StrCat(source, "\x1f", id);
}

}  // namespace

// Holds a transport's sink; Close() guarantees no call after it returns.
class SinkHolder {
 public:
  explicit SinkHolder(SubscriptionSink* sink) : sink_(sink) {}
  void Wake() {
    absl::MutexLock lock(&mu_);
    if (sink_ != nullptr) sink_->OnReady();
  }
  void End(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (sink_ != nullptr) sink_->OnEnd(std::move(status));
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    sink_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  SubscriptionSink* sink_ ABSL_GUARDED_BY(mu_);
};

// What a subscriber's catch-up read found after `from`.
struct Scan {
  std::vector<EventPtr> events;  // matching, in order
  uint64_t examined = 0;         // last sequence looked at
  uint64_t gap_from = 0;         // events deleted by retention before they were
  uint64_t gap_to = 0;           // read (gap_to == 0: none)
  absl::Status error;
};

// Reads events after `from` (tail cache, else store) until `space` match the
// filter or kFillMaxScan were looked at. A gap means retention deleted events
// the reader had not seen; with stop_at_gap the scan ends there.
Scan ScanMatching(Broker* broker, const TypeFilter& filter, uint64_t from, size_t space,
                  bool stop_at_gap) {
  Scan scan;
  scan.examined = from;
  for (size_t scanned = 0; scan.events.size() < space && scanned < kFillMaxScan;) {
    absl::StatusOr<std::vector<EventPtr>> evs = broker->ReadEvents(scan.examined, kFillReadChunk);
    if (!evs.ok()) {
      scan.error = evs.status();
      break;
    }
    if (evs->empty()) break;
    if (evs->front()->seq != scan.examined + 1 && scan.gap_to == 0) {
      scan.gap_from = scan.examined + 1;
      scan.gap_to = evs->front()->seq - 1;
      if (stop_at_gap) break;
    }
    for (const EventPtr& ev : *evs) {
      if (scan.events.size() >= space) break;
      scan.examined = ev->seq;
      ++scanned;
      if (filter.Matches(ev->type)) scan.events.push_back(ev);
    }
    if (evs->size() < kFillReadChunk) break;
  }
  return scan;
}

// The read position and ready events of one reader of the log (a broadcast
// stream or a consumer group), fed by live offers from the writer and by
// catch-up fills. Both readers keep one under their own mutex.
struct CatchUp {
  CatchUp(uint64_t from, size_t capacity) : examined(from), capacity(capacity) {}

  // Takes the events a commit appended after prev_last, if this reader is
  // exactly there (else a fill must catch up). Returns true when `ready`
  // went from empty to non-empty; *behind says a fill is needed.
  bool TakeLive(const std::vector<EventPtr>& events, uint64_t prev_last, const TypeFilter& filter,
                bool* behind) {
    if (fill_pending || examined != prev_last) {
      *behind = true;
      return false;
    }
    bool was_empty = ready.empty();
    for (const EventPtr& ev : events) {
      if (ready.size() >= capacity) break;
      examined = ev->seq;
      if (filter.Matches(ev->type)) ready.push_back(ev);
    }
    *behind = examined != events.back()->seq;
    return was_empty && !ready.empty();
  }
  // A fill is worth queueing: none queued, the log is ahead, and there is room.
  bool WantsFill(uint64_t last_seq) const {
    return !fill_pending && examined < last_seq && ready.size() < capacity;
  }
  size_t space() const { return capacity - ready.size(); }
  // A fill's result. Returns true when `ready` went from empty to non-empty.
  bool TakeFill(std::vector<EventPtr>& got, uint64_t upto) {
    fill_pending = false;
    bool was_empty = ready.empty();
    for (EventPtr& ev : got) ready.push_back(std::move(ev));
    examined = upto;
    return was_empty && !ready.empty();
  }

  std::deque<EventPtr> ready;
  uint64_t examined;  // last sequence looked at
  bool fill_pending = false;
  const size_t capacity;
};

// ---------------------------------------------------------------------------
// Broadcast: every matching event from the start position, then live.

class BroadcastSubscription : public Subscription,
                              public std::enable_shared_from_this<BroadcastSubscription> {
 public:
  BroadcastSubscription(Broker* broker, TypeFilter filter, uint64_t cursor, SubscriptionSink* sink)
      : broker_(broker),
        filter_(std::move(filter)),
        sink_(sink),
        state_(cursor, broker->config().broadcast_buffer) {}

  std::optional<Outgoing> Next() override {
    absl::MutexLock lock(&mu_);
    if (closed_ || state_.ready.empty()) {
      MaybeRequestFillLocked();
      return std::nullopt;
    }
    Outgoing out{std::move(state_.ready.front()), 1, ""};
    state_.ready.pop_front();
    if (state_.ready.size() < state_.capacity / 2) MaybeRequestFillLocked();
    return out;
  }

  void Close() override {
    sink_.Close();
    bool was_open;
    {
      absl::MutexLock lock(&mu_);
      was_open = !closed_;
      closed_ = true;
      state_.ready.clear();
    }
    if (was_open) broker_->SubscriberCountChanged(-1);
  }

  bool closed() {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  const TypeFilter& filter() const { return filter_; }

  // A commit just appended `events` after prev_last (writer thread).
  void OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) {
    bool wake = false;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      bool behind = false;
      wake = state_.TakeLive(events, prev_last, filter_, &behind);
      if (behind) MaybeRequestFillLocked();
    }
    if (wake) sink_.Wake();
  }

  void End(absl::Status status) { sink_.End(std::move(status)); }

 private:
  void MaybeRequestFillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_ || !state_.WantsFill(broker_->last_sequence())) return;
    state_.fill_pending = true;
    broker_->RequestFill([self = shared_from_this()] { self->Fill(); });
  }

  // On the fill thread: catch up from the cache or the store.
  void Fill() {
    uint64_t from;
    size_t space;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) {
        state_.fill_pending = false;
        return;
      }
      from = state_.examined;
      space = state_.space();
    }
    Scan scan = ScanMatching(broker_, filter_, from, space, /*stop_at_gap=*/true);
    std::vector<EventPtr>& got = scan.events;
    uint64_t examined = scan.examined;
    absl::Status error = scan.error;
    if (error.ok() && scan.gap_to != 0) {
      error = absl::ResourceExhaustedError(absl::StrCat(
          "subscriber fell behind retention: events ", scan.gap_from, "..", scan.gap_to,
          " were deleted before delivery; resubscribe with start=SEQUENCE"));
    }
    bool wake = false;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) {
        state_.fill_pending = false;
        return;
      }
      wake = state_.TakeFill(got, examined);
      if (error.ok()) MaybeRequestFillLocked();
    }
    if (!error.ok()) {
      broker_->metrics()->subscribers_dropped.Increment();
      LogWarn("ending subscriber", {{"reason", error.message()}});
      sink_.End(error);
      return;
    }
    if (wake) sink_.Wake();
  }

  Broker* const broker_;
  const TypeFilter filter_;
  SinkHolder sink_;
  absl::Mutex mu_;
  CatchUp state_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// ---------------------------------------------------------------------------
// Consumer groups: members share the work, at-least-once with acks.

class GroupMember;

class Group : public std::enable_shared_from_this<Group> {
 public:
  Group(Broker* broker, GroupRecord rec, TypeFilter filter, uint64_t dead_lettered)
      : broker_(broker),
        name_(rec.name),
        rec_(std::move(rec)),
        filter_(std::move(filter)),
        state_(rec_.cursor, broker->config().group_buffer),
        dead_lettered_(dead_lettered),
        redeliveries_metric_(&broker->metrics()->group_redeliveries.Add({{"group", name_}})),
        dead_letters_metric_(&broker->metrics()->group_dead_letters.Add({{"group", name_}})),
        pending_gauge_(&broker->metrics()->group_pending.Add({{"group", name_}})),
        lag_gauge_(&broker->metrics()->group_lag.Add({{"group", name_}})) {}

  const std::string& name() const { return name_; }

  void Restore(std::vector<std::pair<PendingRecord, EventPtr>> pending) {
    absl::MutexLock lock(&mu_);
    absl::Time now = broker_->clock()->Now();
    for (auto& [rec, ev] : pending) {
      Pending p;
      p.ev = std::move(ev);
      p.attempts = rec.attempts;
      p.awaiting = true;
      p.available_at = now;
      redeliver_.insert({now, rec.seq});
      pending_.emplace(rec.seq, std::move(p));
    }
  }

  // A subscriber joins with (possibly new) filters.
  absl::Status Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter);
  void Leave(GroupMember* member);
  std::optional<Outgoing> NextFor(GroupMember* member);

  void OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) {
    std::vector<std::shared_ptr<GroupMember>> wake;
    {
      absl::MutexLock lock(&mu_);
      bool behind = false;
      bool became_ready = state_.TakeLive(events, prev_last, filter_, &behind);
      if (behind) MaybeRequestFillLocked();
      if (became_ready) wake = MembersLocked();
    }
    Wake(wake);
  }

  absl::Status ValidateAckIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                              std::vector<uint64_t>* seqs) {
    if (ids.empty()) return absl::InvalidArgumentError("ack_ids: empty");
    absl::MutexLock lock(&mu_);
    uint64_t cursor = CursorLocked();
    for (int i = 0; i < ids.size(); ++i) {
      uint64_t seq;
      uint32_t attempt;
      if (!ParseAckId(ids[i], &seq, &attempt)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ack_ids[", i, "]: '", ids[i].substr(0, 64), "' is not an ack id"));
      }
      if (seq > cursor && pending_.count(seq) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("ack_ids[", i, "]: unknown ack id '", ids[i],
                                                       "' (never delivered to group '", name_,
                                                       "')"));
      }
      seqs->push_back(seq);
    }
    return absl::OkStatus();
  }

  v1::AckResponse Ack(const std::vector<uint64_t>& seqs) {
    v1::AckResponse resp;
    std::vector<GroupOp> ops;
    std::vector<std::shared_ptr<GroupMember>> wake;
    {
      absl::MutexLock lock(&mu_);
      bool unblocked = false;
      for (uint64_t seq : seqs) {
        auto it = pending_.find(seq);
        if (it == pending_.end()) {
          resp.set_already_acked(resp.already_acked() + 1);
          continue;
        }
        unblocked |= ReleaseMemberLocked(it->second);
        if (it->second.awaiting) {
          redeliver_.erase({it->second.available_at, seq});
        } else {
          deadlines_.erase({it->second.deadline, seq});
        }
        pending_.erase(it);
        ops.push_back(Op(GroupOp::Kind::kRemovePending, seq));
        resp.set_acked(resp.acked() + 1);
      }
      if (unblocked) wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
    return resp;
  }

  v1::NackResponse Nack(const std::vector<uint64_t>& seqs, absl::Duration delay) {
    v1::NackResponse resp;
    std::vector<GroupOp> ops;
    std::vector<std::shared_ptr<GroupMember>> wake;
    {
      absl::MutexLock lock(&mu_);
      absl::Time at = broker_->clock()->Now() + delay;
      for (uint64_t seq : seqs) {
        auto it = pending_.find(seq);
        if (it == pending_.end() || it->second.awaiting) continue;
        if (RequeueLocked(seq, it->second, at, &ops)) pending_.erase(it);
        resp.set_nacked(resp.nacked() + 1);
      }
      wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
    return resp;
  }

  uint32_t ModifyDeadline(const std::vector<uint64_t>& seqs, absl::Duration deadline) {
    absl::MutexLock lock(&mu_);
    absl::Time at = broker_->clock()->Now() + deadline;
    uint32_t n = 0;
    for (uint64_t seq : seqs) {
      auto it = pending_.find(seq);
      if (it == pending_.end() || it->second.awaiting) continue;
      deadlines_.erase({it->second.deadline, seq});
      it->second.deadline = at;
      deadlines_.insert({at, seq});
      ++n;
    }
    return n;
  }

  // Ack deadlines that passed: the event goes back for redelivery. Looks
  // only at the deliveries whose deadline passed (deadlines_ is ordered), not
  // at every pending event.
  void Expire(absl::Time now) {
    std::vector<GroupOp> ops;
    std::vector<std::shared_ptr<GroupMember>> wake;
    {
      absl::MutexLock lock(&mu_);
      while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
        uint64_t seq = deadlines_.begin()->second;
        auto it = pending_.find(seq);
        if (it == pending_.end() || it->second.awaiting) {
          deadlines_.erase(deadlines_.begin());
          continue;
        }
        if (RequeueLocked(seq, it->second, now, &ops)) pending_.erase(it);
      }
      if (!redeliver_.empty() && redeliver_.begin()->first <= now) wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
  }

  absl::StatusOr<uint32_t> Replay(const std::vector<DeadLetterRecord>& letters) {
    std::vector<GroupOp> ops;
    std::vector<std::shared_ptr<GroupMember>> wake;
    uint32_t n = 0;
    {
      absl::MutexLock lock(&mu_);
      absl::Time now = broker_->clock()->Now();
      for (const DeadLetterRecord& d : letters) {
        uint64_t seq = d.event->seq;
        ops.push_back(Op(GroupOp::Kind::kRemoveDeadLetter, seq));
        if (pending_.count(seq)) continue;
        Pending p;
        p.ev = d.event;
        p.attempts = 0;
        p.awaiting = true;
        p.available_at = now;
        redeliver_.insert({now, seq});
        pending_.emplace(seq, std::move(p));
        ops.push_back(Op(GroupOp::Kind::kSetPending, seq, 0));
        if (dead_lettered_ > 0) --dead_lettered_;
        ++n;
      }
      wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
    return n;
  }

  void FillStats(v1::GroupStats* s, uint64_t last_seq) {
    absl::MutexLock lock(&mu_);
    s->set_name(name_);
    for (const std::string& t : filter_.patterns()) s->add_types(t);
    s->set_pending(pending_.size());
    uint64_t cursor = CursorLocked();
    s->set_lag(last_seq > cursor ? last_seq - cursor : 0);
    s->set_redelivered(redelivered_);
    s->set_dead_lettered(dead_lettered_);
    s->set_cursor(cursor);
    s->set_members(static_cast<uint32_t>(members_.size()));
  }

  void UpdateGauges(uint64_t last_seq) {
    absl::MutexLock lock(&mu_);
    pending_gauge_->Set(static_cast<double>(pending_.size()));
    uint64_t cursor = CursorLocked();
    lag_gauge_->Set(static_cast<double>(last_seq > cursor ? last_seq - cursor : 0));
  }

  std::vector<std::string> PatternsForStats(int* members) {
    absl::MutexLock lock(&mu_);
    *members = static_cast<int>(members_.size());
    return filter_.patterns();
  }

  void EndAll(const absl::Status& status);

 private:
  struct Pending {
    EventPtr ev;
    uint32_t attempts = 0;
    absl::Time deadline;
    GroupMember* member = nullptr;
    bool awaiting = false;  // waiting for redelivery at available_at
    absl::Time available_at;
  };

  GroupOp Op(GroupOp::Kind kind, uint64_t seq, uint32_t attempts = 0) {
    GroupOp op;
    op.kind = kind;
    op.group.name = name_;
    op.seq = seq;
    op.attempts = attempts;
    return op;
  }

  uint64_t CursorLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return state_.ready.empty() ? state_.examined : state_.ready.front()->seq - 1;
  }

  void PersistCursorLocked(std::vector<GroupOp>* ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    uint64_t c = CursorLocked();
    if (c > rec_.cursor) {
      rec_.cursor = c;
      GroupOp op = Op(GroupOp::Kind::kSetCursor, 0);
      op.group.cursor = c;
      ops->push_back(std::move(op));
    }
  }

  // Returns true when the member was at its in-flight limit before.
  bool ReleaseMemberLocked(Pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Takes an event back from its member; dead-letters it when it had its
  // max_deliveries. Returns true when the caller must erase it from pending_.
  bool RequeueLocked(uint64_t seq, Pending& p, absl::Time available_at, std::vector<GroupOp>* ops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ReleaseMemberLocked(p);
    if (!p.awaiting) deadlines_.erase({p.deadline, seq});
    if (p.attempts >= rec_.max_deliveries) {
      GroupOp op = Op(GroupOp::Kind::kDeadLetter, seq, p.attempts);
      op.event = p.ev;
      ops->push_back(std::move(op));
      ++dead_lettered_;
      dead_letters_metric_->Increment();
      LogWarn(
          "event dead-lettered",
          {{"group", name_}, {"sequence", seq}, {"attempts", p.attempts}, {"type", p.ev->type}});
      return true;
    }
    p.awaiting = true;
    p.available_at = available_at;
    redeliver_.insert({available_at, seq});
    return false;
  }

  void MaybeRequestFillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!state_.WantsFill(broker_->last_sequence())) return;
    state_.fill_pending = true;
    broker_->RequestFill([self = shared_from_this()] { self->Fill(); });
  }

  void Fill() {
    uint64_t from;
    size_t space;
    TypeFilter filter;  // a copy: Join may change the group's filter meanwhile
    {
      absl::MutexLock lock(&mu_);
      from = state_.examined;
      space = state_.space();
      filter = filter_;
    }
    Scan scan = ScanMatching(broker_, filter, from, space, /*stop_at_gap=*/false);
    std::vector<EventPtr>& got = scan.events;
    uint64_t examined = scan.examined;
    if (!scan.error.ok()) {
      LogError("group fill failed", {{"group", name_}, {"error", scan.error.ToString()}});
    }
    if (scan.gap_to != 0) {
      LogWarn("group fell behind retention",
              {{"group", name_}, {"from", scan.gap_from}, {"to", scan.gap_to}});
    }
    std::vector<std::shared_ptr<GroupMember>> wake;
    std::vector<GroupOp> ops;
    {
      absl::MutexLock lock(&mu_);
      bool became_ready = state_.TakeFill(got, examined);
      PersistCursorLocked(&ops);
      MaybeRequestFillLocked();
      if (became_ready) wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
  }

  std::vector<std::shared_ptr<GroupMember>> MembersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return members_;
  }
  static void Wake(const std::vector<std::shared_ptr<GroupMember>>& members);

  Broker* const broker_;
  const std::string name_;
  absl::Mutex mu_;
  GroupRecord rec_ ABSL_GUARDED_BY(mu_);
  TypeFilter filter_ ABSL_GUARDED_BY(mu_);
  CatchUp state_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<absl::Time, uint64_t>> redeliver_ ABSL_GUARDED_BY(mu_);
  // (ack deadline, seq) of every delivered, unacked event.
  std::set<std::pair<absl::Time, uint64_t>> deadlines_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<GroupMember>> members_ ABSL_GUARDED_BY(mu_);
  // Unacked deliveries each member holds (at most its max_in_flight_).
  absl::flat_hash_map<const GroupMember*, uint32_t> in_flight_ ABSL_GUARDED_BY(mu_);
  uint64_t redelivered_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dead_lettered_ ABSL_GUARDED_BY(mu_) = 0;
  prometheus::Counter* redeliveries_metric_;
  prometheus::Counter* dead_letters_metric_;
  prometheus::Gauge* pending_gauge_;
  prometheus::Gauge* lag_gauge_;
};

class GroupMember : public Subscription {
 public:
  GroupMember(Broker* broker, std::shared_ptr<Group> group, SubscriptionSink* sink,
              absl::Duration ack_deadline, uint32_t max_in_flight)
      : ack_deadline_(ack_deadline),
        max_in_flight_(max_in_flight),
        broker_(broker),
        group_(std::move(group)),
        sink_(sink) {}

  std::optional<Outgoing> Next() override { return group_->NextFor(this); }
  void Close() override {
    sink_.Close();
    if (!closed_.exchange(true)) {
      group_->Leave(this);
      broker_->SubscriberCountChanged(-1);
    }
  }
  void Wake() { sink_.Wake(); }
  void End(absl::Status s) { sink_.End(std::move(s)); }

  const absl::Duration ack_deadline_;
  const uint32_t max_in_flight_;

 private:
  friend class Group;
  Broker* const broker_;
  std::shared_ptr<Group> group_;
  SinkHolder sink_;
  std::atomic<bool> closed_{false};
};

bool Group::ReleaseMemberLocked(Pending& p) {
  bool was_blocked = false;
  if (p.member != nullptr) {
    uint32_t& n = in_flight_[p.member];
    was_blocked = n >= p.member->max_in_flight_;
    --n;
    p.member = nullptr;
  }
  return was_blocked;
}

void Group::Wake(const std::vector<std::shared_ptr<GroupMember>>& members) {
  for (const auto& m : members) m->Wake();
}

absl::Status Group::Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter) {
  std::vector<GroupOp> ops;
  {
    absl::MutexLock lock(&mu_);
    // EndAll takes mu_ after Shutdown set the flag: a member joins before
    // (and is ended) or sees the flag.
    if (broker_->shutting_down()) return absl::UnavailableError("broker is shutting down");
    if (filter.patterns() != filter_.patterns()) {
      // Like a JetStream consumer update: the group's filter follows its
      // newest member. Events already fetched keep their old match.
      LogInfo("group filter changed", {{"group", name_},
                                       {"from", absl::StrJoin(filter_.patterns(), ",")},
                                       {"to", absl::StrJoin(filter.patterns(), ",")}});
      filter_ = filter;
      rec_.types = filter.patterns();
      GroupOp op = Op(GroupOp::Kind::kUpsertGroup, 0);
      op.group = rec_;
      ops.push_back(std::move(op));
    }
    members_.push_back(std::move(member));
  }
  broker_->EnqueueOps(std::move(ops));
  return absl::OkStatus();
}

void Group::Leave(GroupMember* member) {
  std::vector<std::shared_ptr<GroupMember>> wake;
  std::vector<GroupOp> ops;
  {
    absl::MutexLock lock(&mu_);
    members_.erase(std::remove_if(members_.begin(), members_.end(),
                                  [&](const auto& m) { return m.get() == member; }),
                   members_.end());
    // What it held goes to the others now rather than at its deadline.
    absl::Time now = broker_->clock()->Now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.member == member && RequeueLocked(it->first, it->second, now, &ops)) {
        it = pending_.erase(it);
        continue;
      }
      ++it;
    }
    in_flight_.erase(member);
    wake = MembersLocked();
  }
  broker_->EnqueueOps(std::move(ops));
  Wake(wake);
}

std::optional<Outgoing> Group::NextFor(GroupMember* member) {
  std::vector<GroupOp> ops;
  std::optional<Outgoing> out;
  {
    absl::MutexLock lock(&mu_);
    uint32_t& in_flight = in_flight_[member];
    if (member->closed_ || in_flight >= member->max_in_flight_) return std::nullopt;
    absl::Time now = broker_->clock()->Now();
    if (!redeliver_.empty() && redeliver_.begin()->first <= now) {
      uint64_t seq = redeliver_.begin()->second;
      redeliver_.erase(redeliver_.begin());
      Pending& p = pending_[seq];
      p.awaiting = false;
      p.attempts++;
      p.member = member;
      p.deadline = now + member->ack_deadline_;
      deadlines_.insert({p.deadline, seq});
      ++in_flight;
      if (p.attempts > 1) {
        ++redelivered_;
        redeliveries_metric_->Increment();
      }
      ops.push_back(Op(GroupOp::Kind::kSetPending, seq, p.attempts));
      out = Outgoing{p.ev, p.attempts, MakeAckId(seq, p.attempts)};
    } else if (!state_.ready.empty()) {
      EventPtr ev = std::move(state_.ready.front());
      state_.ready.pop_front();
      uint64_t seq = ev->seq;
      Pending& p = pending_[seq];
      p.ev = ev;
      p.attempts = 1;
      p.member = member;
      p.deadline = now + member->ack_deadline_;
      deadlines_.insert({p.deadline, seq});
      ++in_flight;
      ops.push_back(Op(GroupOp::Kind::kSetPending, seq, 1));
      ops.back().first_write = true;
      PersistCursorLocked(&ops);
      if (state_.ready.size() < state_.capacity / 2) MaybeRequestFillLocked();
      out = Outgoing{std::move(ev), 1, MakeAckId(seq, 1)};
    } else {
      MaybeRequestFillLocked();
    }
  }
  broker_->EnqueueOps(std::move(ops));
  return out;
}

void Group::EndAll(const absl::Status& status) {
  std::vector<std::shared_ptr<GroupMember>> members;
  {
    absl::MutexLock lock(&mu_);
    members = members_;
  }
  for (const auto& m : members) m->End(status);
}

// ---------------------------------------------------------------------------
// Broker

Broker::Broker(BrokerConfig config, std::unique_ptr<EventStore> store, Clock* clock,
               BrokerMetrics* metrics)
    : config_(std::move(config)), store_(std::move(store)), clock_(clock), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<Broker>> Broker::Create(BrokerConfig config,
                                                       std::unique_ptr<EventStore> store,
                                                       Clock* clock, BrokerMetrics* metrics) {
  std::unique_ptr<Broker> b(new Broker(std::move(config), std::move(store), clock, metrics));
  if (absl::Status s = b->Recover(); !s.ok()) return s;
  b->writer_ = std::thread([p = b.get()] { p->WriterLoop(); });
  b->filler_ = std::thread([p = b.get()] { p->FillLoop(); });
  if (b->config_.run_housekeeping)
    b->housekeeper_ = std::thread([p = b.get()] { p->HousekeepingLoop(); });
  return b;
}

absl::Status Broker::Recover() {
  absl::StatusOr<StoreBounds> bounds = store_->Bounds();
  if (!bounds.ok()) return bounds.status();
  last_seq_ = bounds->last_seq;
  absl::Time now = clock_->Now();
  absl::StatusOr<std::vector<EventPtr>> recent =
      store_->ReadIngestedSince(now - config_.dedupe_window);
  if (!recent.ok()) return recent.status();
  for (const EventPtr& ev : *recent) {
    events::v1::Event parsed = ev->Parse();
    std::string key = DedupeKey(parsed.source(), parsed.id());
    dedupe_[key] = DedupeEntry{ev->seq, parsed.id()};
    dedupe_order_.emplace_back(ev->ingest_time, std::move(key));
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
    auto group = std::make_shared<Group>(this, std::move(rec), *std::move(filter), *dead);
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

void Broker::Shutdown() {
  bool was = shutting_down_.exchange(true);
  if (!was) {
    std::vector<std::shared_ptr<BroadcastSubscription>> subs;
    std::vector<std::shared_ptr<Group>> groups;
    {
      absl::MutexLock lock(&subs_mu_);
      for (auto& w : broadcasts_) {
        if (auto s = w.lock()) subs.push_back(std::move(s));
      }
      for (auto& [name, g] : groups_) groups.push_back(g);
    }
    absl::Status bye = absl::UnavailableError("broker is shutting down");
    for (auto& s : subs) s->End(bye);
    for (auto& g : groups) g->EndAll(bye);
  }
  {
    absl::MutexLock lock(&hk_mu_);
    stop_hk_ = true;
  }
  if (housekeeper_.joinable()) housekeeper_.join();
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
  google::protobuf::Timestamp now = ToProto(clock_->Now());
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
      publish_queue_.push_back(PublishWork{std::move(events), std::move(done), absl::Now(), bytes});
      queued_publish_bytes_ += bytes;
      ++enqueued_writes_;
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
      works.swap(publish_queue_);
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

void Broker::ExpireDedupe(absl::Time now) {
  while (!dedupe_order_.empty() && (dedupe_order_.front().first < now - config_.dedupe_window ||
                                    dedupe_order_.size() > config_.max_dedupe_keys)) {
    auto it = dedupe_.find(dedupe_order_.front().second);
    if (it != dedupe_.end()) dedupe_.erase(it);
    dedupe_order_.pop_front();
  }
}

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
    absl::StatusOr<uint64_t> r = store_->Commit(one, now);
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
  ExpireDedupe(now);
  std::vector<std::vector<PublishResult>> results(works.size());
  WriteBatch batch;
  std::vector<std::pair<size_t, size_t>> where;  // (work, index) per stored event
  struct InBatchDuplicate {
    size_t work, index, stored;
  };
  std::vector<InBatchDuplicate> in_batch_dups;
  absl::flat_hash_map<std::string, size_t> batch_keys;
  std::vector<std::pair<std::string, size_t>> new_keys;
  for (size_t w = 0; w < works.size(); ++w) {
    results[w].resize(works[w].events.size());
    for (size_t i = 0; i < works[w].events.size(); ++i) {
      NewEvent& ev = works[w].events[i];
      if (ev.client_id) {
        std::string key = DedupeKey(ev.source, ev.id);
        if (auto it = dedupe_.find(key); it != dedupe_.end()) {
          results[w][i] = PublishResult{ev.id, it->second.seq, true};
          metrics_->duplicates.Increment();
          continue;
        }
        if (auto it = batch_keys.find(key); it != batch_keys.end()) {
          in_batch_dups.push_back({w, i, it->second});
          metrics_->duplicates.Increment();
          continue;
        }
        batch_keys.emplace(key, batch.events.size());
        new_keys.emplace_back(std::move(key), batch.events.size());
      }
      where.emplace_back(w, i);
      batch.events.push_back(&ev);
    }
  }
  std::vector<QueuedOp> ops = Coalesce(queued_ops);
  std::vector<QueuedOp> retry;
  batch.ops = TakeOps(ops);
  absl::Time t0 = absl::Now();
  absl::StatusOr<uint64_t> first = store_->Commit(batch, now);
  if (!first.ok() && !batch.ops.empty()) {
    // Group state must never fail the publishes riding with it: commit the
    // events alone, and the ops apart (isolating any the store refuses).
    LogWarn("store commit failed; committing events and group state apart",
            {{"error", first.status().ToString()}});
    GiveBackOps(batch.ops, ops);
    batch.ops.clear();
    first = batch.events.empty() ? absl::StatusOr<uint64_t>(0) : store_->Commit(batch, now);
    retry = CommitOpsAlone(std::move(ops), now, !batch.events.empty() && first.ok());
  }
  metrics_->commit_latency.Observe(absl::ToDoubleSeconds(absl::Now() - t0));
  if (!first.ok()) {
    LogError("store commit failed", {{"error", first.status().ToString()},
                                     {"events", static_cast<uint64_t>(batch.events.size())}});
    for (PublishWork& w : works)
      w.done(
          absl::UnavailableError(absl::StrCat("store commit failed: ", first.status().message())));
    return retry;
  }
  uint64_t prev_last = last_seq_.load();
  std::vector<EventPtr> committed;
  committed.reserve(batch.events.size());
  if (!batch.events.empty()) {
    metrics_->commit_events.Observe(static_cast<double>(batch.events.size()));
    for (size_t k = 0; k < batch.events.size(); ++k) {
      uint64_t seq = *first + k;
      auto [w, i] = where[k];
      NewEvent& n = works[w].events[i];
      results[w][i] = PublishResult{n.id, seq, false};
      auto stored = std::make_shared<StoredEvent>();
      stored->seq = seq;
      stored->ingest_time = now;
      stored->type = n.type;
      stored->payload = std::move(n.payload);
      auto& counter = published_by_type_[stored->type];
      if (counter == nullptr) counter = &metrics_->events_published.Add({{"type", stored->type}});
      counter->Increment();
      committed.push_back(std::move(stored));
    }
    for (const InBatchDuplicate& d : in_batch_dups) {
      results[d.work][d.index] =
          PublishResult{works[d.work].events[d.index].id, committed[d.stored]->seq, true};
    }
    for (auto& [key, k] : new_keys) {
      auto [w, i] = where[k];
      dedupe_[key] = DedupeEntry{committed[k]->seq, works[w].events[i].id};
      dedupe_order_.emplace_back(now, std::move(key));
    }
    {
      absl::MutexLock lock(&cache_mu_);
      for (const EventPtr& ev : committed) cache_.push_back(ev);
      while (cache_.size() > config_.cache_events) cache_.pop_front();
    }
    last_seq_ = committed.back()->seq;
    metrics_->last_sequence.Set(static_cast<double>(committed.back()->seq));
    RecordRate(now, committed.size());
  }
  // Subscribers first: their latency is the product; the acks follow within
  // microseconds.
  if (!committed.empty()) Dispatch(committed, prev_last);
  absl::Time acked = absl::Now();
  for (size_t w = 0; w < works.size(); ++w) {
    metrics_->publish_latency.Observe(absl::ToDoubleSeconds(acked - works[w].received));
    works[w].done(std::move(results[w]));
  }
  return retry;
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
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&fill_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fill_mu_) {
        return !fill_queue_.empty() || stop_fill_;
      };
      fill_mu_.Await(absl::Condition(&ready));
      if (stop_fill_) return;
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
  absl::MutexLock lock(&tick_mu_);
  if (absl::Now() >= next_maintenance_) {
    next_maintenance_ = absl::Now() + absl::Milliseconds(200);
    store_->Maintain();
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

absl::StatusOr<uint64_t> Broker::StartCursor(const v1::SubscribeRequest& req) {
  uint64_t last = last_seq_.load();
  switch (req.start()) {
    case v1::SubscribeRequest::LATEST:
      return last;
    case v1::SubscribeRequest::EARLIEST:
      return 0;
    case v1::SubscribeRequest::SEQUENCE:
      if (req.start_sequence() == 0) {
        return absl::InvalidArgumentError("start_sequence: required with start=SEQUENCE (>= 1)");
      }
      if (req.start_sequence() > last + 1) {
        return absl::InvalidArgumentError(absl::StrCat("start_sequence: ", req.start_sequence(),
                                                       " is in the future (last sequence is ", last,
                                                       ")"));
      }
      return req.start_sequence() - 1;
    case v1::SubscribeRequest::TIME: {
      if (!req.has_start_time()) {
        return absl::InvalidArgumentError("start_time: required with start=TIME");
      }
      absl::StatusOr<uint64_t> first = store_->FirstSequenceAtOrAfter(FromProto(req.start_time()));
      if (!first.ok()) return first.status();
      return *first - 1;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("start: unknown value ", req.start()));
  }
}

absl::StatusOr<std::shared_ptr<Subscription>> Broker::Subscribe(const v1::SubscribeRequest& req,
                                                                SubscriptionSink* sink) {
  if (shutting_down_) return absl::UnavailableError("broker is shutting down");
  std::vector<std::string> patterns(req.types().begin(), req.types().end());
  absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(patterns, "types");
  if (!filter.ok()) return filter.status();
  absl::StatusOr<uint64_t> cursor = StartCursor(req);
  if (!cursor.ok()) return cursor.status();
  if (req.group().empty()) {
    auto sub = std::make_shared<BroadcastSubscription>(this, *std::move(filter), *cursor, sink);
    {
      // Shutdown sets shutting_down_ before it takes subs_mu_ to end every
      // stream: checked here under subs_mu_, a stream is either in its
      // snapshot or refused, never left running.
      absl::MutexLock lock(&subs_mu_);
      if (shutting_down_) return absl::UnavailableError("broker is shutting down");
      broadcasts_.push_back(sub);
    }
    SubscriberCountChanged(+1);
    return sub;
  }
  if (req.group().size() > 200 || req.group().find_first_of(",\x1f") != std::string::npos) {
    return absl::InvalidArgumentError("group: at most 200 characters, no ','");
  }
  if (req.has_ack_deadline() && (FromProto(req.ack_deadline()) < absl::Milliseconds(100) ||
                                 FromProto(req.ack_deadline()) > absl::Hours(12))) {
    return absl::InvalidArgumentError("ack_deadline: must be between 100ms and 12h");
  }
  if (req.max_in_flight() > 100000) {
    return absl::InvalidArgumentError("max_in_flight: at most 100000");
  }
  if (req.max_deliveries() > 1000) {
    return absl::InvalidArgumentError("max_deliveries: at most 1000");
  }
  absl::Duration deadline =
      req.has_ack_deadline() ? FromProto(req.ack_deadline()) : config_.default_ack_deadline;
  uint32_t max_in_flight =
      req.max_in_flight() ? req.max_in_flight() : config_.default_max_in_flight;
  std::shared_ptr<Group> group;
  std::vector<GroupOp> ops;
  {
    absl::MutexLock lock(&subs_mu_);
    auto it = groups_.find(req.group());
    if (it != groups_.end()) {
      group = it->second;
    } else {
      GroupRecord rec;
      rec.name = req.group();
      rec.types = filter->patterns();
      rec.cursor = *cursor;
      rec.max_deliveries =
          req.max_deliveries() ? req.max_deliveries() : config_.default_max_deliveries;
      GroupOp op;
      op.kind = GroupOp::Kind::kUpsertGroup;
      op.group = rec;
      ops.push_back(std::move(op));
      group = std::make_shared<Group>(this, std::move(rec), *filter, 0);
      groups_[req.group()] = group;
      LogInfo("consumer group created", {{"group", req.group()},
                                         {"cursor", *cursor},
                                         {"types", absl::StrJoin(filter->patterns(), ",")}});
    }
  }
  EnqueueOps(std::move(ops));
  auto member = std::make_shared<GroupMember>(this, group, sink, deadline, max_in_flight);
  if (absl::Status s = group->Join(member, *filter); !s.ok()) return s;
  SubscriberCountChanged(+1);
  return member;
}

absl::StatusOr<std::shared_ptr<Group>> Broker::FindGroup(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("group: required");
  absl::MutexLock lock(&subs_mu_);
  auto it = groups_.find(name);
  if (it == groups_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("group: no consumer group '", name, "'"));
  }
  return it->second;
}

absl::StatusOr<v1::AckResponse> Broker::Ack(const v1::AckRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  std::vector<uint64_t> seqs;
  if (absl::Status s = (*g)->ValidateAckIds(req.ack_ids(), &seqs); !s.ok()) return s;
  return (*g)->Ack(seqs);
}

absl::StatusOr<v1::NackResponse> Broker::Nack(const v1::NackRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  absl::Duration delay = req.has_delay() ? FromProto(req.delay()) : absl::ZeroDuration();
  if (delay < absl::ZeroDuration() || delay > absl::Hours(24)) {
    return absl::InvalidArgumentError("delay: must be between 0 and 24h");
  }
  std::vector<uint64_t> seqs;
  if (absl::Status s = (*g)->ValidateAckIds(req.ack_ids(), &seqs); !s.ok()) return s;
  return (*g)->Nack(seqs, delay);
}

absl::StatusOr<v1::ModifyAckDeadlineResponse> Broker::ModifyAckDeadline(
    const v1::ModifyAckDeadlineRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  if (!req.has_ack_deadline()) return absl::InvalidArgumentError("ack_deadline: required");
  absl::Duration d = FromProto(req.ack_deadline());
  if (d < absl::ZeroDuration() || d > absl::Hours(12)) {
    return absl::InvalidArgumentError("ack_deadline: must be between 0 and 12h");
  }
  std::vector<uint64_t> seqs;
  if (absl::Status s = (*g)->ValidateAckIds(req.ack_ids(), &seqs); !s.ok()) return s;
  v1::ModifyAckDeadlineResponse resp;
  resp.set_modified((*g)->ModifyDeadline(seqs, d));
  return resp;
}

absl::StatusOr<v1::GetEventHistoryResponse> Broker::GetEventHistory(
    const v1::GetEventHistoryRequest& req) {
  if (req.limit() > 10000) return absl::InvalidArgumentError("limit: at most 10000");
  std::vector<std::string> patterns(req.types().begin(), req.types().end());
  absl::StatusOr<TypeFilter> filter = TypeFilter::Parse(patterns, "types");
  if (!filter.ok()) return filter.status();
  HistoryQuery q;
  q.limit = req.limit() ? req.limit() : config_.default_history_limit;
  if (!filter->MatchesAll()) {
    for (const std::string& p : patterns) {
      if (p.size() > 2 && p.compare(p.size() - 2, 2, ".*") == 0) {
        q.type_prefixes.push_back(p.substr(0, p.size() - 1));
      } else {
        q.exact_types.push_back(p);
      }
    }
  }
  q.correlation_id = req.correlation_id();
  q.subject = req.subject();
  if (req.has_since()) q.since = FromProto(req.since());
  q.before_sequence = req.before_sequence();
  absl::StatusOr<std::vector<EventPtr>> evs = store_->Query(q);
  if (!evs.ok()) return evs.status();
  v1::GetEventHistoryResponse resp;
  for (const EventPtr& ev : *evs) *resp.add_events() = ev->Parse();
  return resp;
}

absl::StatusOr<v1::GetStatsResponse> Broker::GetStats() {
  v1::GetStatsResponse resp;
  absl::StatusOr<StoreBounds> b = store_->Bounds();
  if (!b.ok()) return b.status();
  resp.set_total_events(b->count);
  resp.set_first_sequence(b->first_seq);
  resp.set_last_sequence(b->last_seq);
  resp.set_storage_bytes(store_->StorageBytes());
  {
    absl::MutexLock lock(&rate_mu_);
    int64_t now = absl::ToUnixSeconds(clock_->Now());
    uint64_t n = 0;
    for (auto& [sec, count] : rate_) {
      if (sec >= now - 10 && sec < now) n += count;
    }
    resp.set_events_per_second(static_cast<double>(n) / 10.0);
  }
  std::vector<std::shared_ptr<BroadcastSubscription>> subs;
  std::vector<std::shared_ptr<Group>> groups;
  {
    absl::MutexLock lock(&subs_mu_);
    resp.set_active_subscribers(subscriber_count_);
    for (auto& w : broadcasts_) {
      if (auto s = w.lock()) subs.push_back(std::move(s));
    }
    for (auto& [name, g] : groups_) groups.push_back(g);
  }
  auto& by_type = *resp.mutable_subscriptions_by_type();
  for (auto& s : subs) {
    if (s->closed()) continue;
    if (s->filter().patterns().empty()) by_type["*"]++;
    for (const std::string& p : s->filter().patterns()) by_type[p]++;
  }
  for (auto& g : groups) {
    int members = 0;
    std::vector<std::string> patterns = g->PatternsForStats(&members);
    if (members > 0 && patterns.empty()) by_type["*"] += members;
    for (const std::string& p : patterns) by_type[p] += members;
    g->FillStats(resp.add_groups(), b->last_seq);
  }
  HistoryQuery recent;
  recent.limit = 10;
  absl::StatusOr<std::vector<EventPtr>> evs = store_->Query(recent);
  if (!evs.ok()) return evs.status();
  for (const EventPtr& ev : *evs) *resp.add_recent_events() = ev->Parse();
  return resp;
}

absl::StatusOr<v1::ListDeadLettersResponse> Broker::ListDeadLetters(
    const v1::ListDeadLettersRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  if (req.limit() > 10000) return absl::InvalidArgumentError("limit: at most 10000");
  absl::StatusOr<std::vector<DeadLetterRecord>> letters =
      store_->ListDeadLetters(req.group(), req.after_sequence(), req.limit() ? req.limit() : 100);
  if (!letters.ok()) return letters.status();
  v1::ListDeadLettersResponse resp;
  for (const DeadLetterRecord& d : *letters) {
    v1::DeadLetter* out = resp.add_dead_letters();
    *out->mutable_event() = d.event->Parse();
    out->set_group(d.group);
    out->set_delivery_attempts(d.attempts);
    *out->mutable_dead_lettered_at() = ToProto(d.dead_at);
  }
  return resp;
}

absl::StatusOr<v1::ReplayDeadLettersResponse> Broker::ReplayDeadLetters(
    const v1::ReplayDeadLettersRequest& req) {
  absl::StatusOr<std::shared_ptr<Group>> g = FindGroup(req.group());
  if (!g.ok()) return g.status();
  // Dead letters are written asynchronously with the group's other state.
  FlushWrites();
  if (static_cast<size_t>(req.sequences_size()) > config_.max_replay_per_call) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequences: at most ", config_.max_replay_per_call, " per call"));
  }
  // One call loads at most config_.max_replay_per_call dead letters; replaying "all"
  // of a larger queue takes several calls (each answers how many it did).
  std::vector<DeadLetterRecord> chosen;
  uint64_t after = 0;
  std::set<uint64_t> wanted(req.sequences().begin(), req.sequences().end());
  while (chosen.size() < config_.max_replay_per_call) {
    absl::StatusOr<std::vector<DeadLetterRecord>> page =
        store_->ListDeadLetters(req.group(), after, 1000);
    if (!page.ok()) return page.status();
    if (page->empty()) break;
    for (DeadLetterRecord& d : *page) {
      after = d.event->seq;
      if (chosen.size() >= config_.max_replay_per_call) break;
      if (wanted.empty() || wanted.count(after)) chosen.push_back(std::move(d));
    }
    if (!wanted.empty() && chosen.size() == wanted.size()) break;
  }
  if (!wanted.empty() && chosen.size() != wanted.size()) {
    std::set<uint64_t> found;
    for (const auto& d : chosen) found.insert(d.event->seq);
    for (int i = 0; i < req.sequences().size(); ++i) {
      if (!found.count(req.sequences(i))) {
        return absl::InvalidArgumentError(absl::StrCat("sequences[", i, "]: ", req.sequences(i),
                                                       " is not a dead letter of group '",
                                                       req.group(), "'"));
      }
    }
  }
  absl::StatusOr<uint32_t> n = (*g)->Replay(chosen);
  if (!n.ok()) return n.status();
  v1::ReplayDeadLettersResponse resp;
  resp.set_replayed(*n);
  return resp;
}

}  // namespace switchboard::broker
