#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_LOCAL_GROUP_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_LOCAL_GROUP_H_

// A consumer group whose state lives in this process: pending deliveries,
// deadlines and redeliveries in memory, every change written to the store as
// a GroupOp riding along with the next commit. The embedded store's groups.

#include "services/event_broker/subscriptions.h"

namespace switchboard::broker {

class LocalGroup : public Group, public std::enable_shared_from_this<LocalGroup> {
 public:
  LocalGroup(SubscriptionHost* broker, GroupRecord rec, TypeFilter filter, uint64_t dead_lettered)
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

  const std::string& name() const override { return name_; }

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
  absl::Status Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter) override;
  void Leave(GroupMember* member) override;
  std::optional<Outgoing> NextFor(GroupMember* member) override;

  void OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) override {
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
                              std::vector<DeliveryRef>* refs) override {
    std::vector<DeliveryRef> parsed;
    if (absl::Status st = ParseAckIds(ids, &parsed); !st.ok()) return st;
    absl::MutexLock lock(&mu_);
    uint64_t cursor = CursorLocked();
    for (size_t i = 0; i < parsed.size(); ++i) {
      if (parsed[i].seq > cursor && pending_.count(parsed[i].seq) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("ack_ids[", i, "]: unknown ack id '", ids[i],
                                                       "' (never delivered to group '", name_,
                                                       "')"));
      }
    }
    refs->insert(refs->end(), parsed.begin(), parsed.end());
    return absl::OkStatus();
  }

  // Acks match the sequence only: an ack of an earlier attempt still means
  // the event was handled.
  absl::StatusOr<v1::AckResponse> Ack(const std::vector<DeliveryRef>& refs) override {
    v1::AckResponse resp;
    std::vector<GroupOp> ops;
    std::vector<std::shared_ptr<GroupMember>> wake;
    {
      absl::MutexLock lock(&mu_);
      bool unblocked = false;
      for (const DeliveryRef& ref : refs) {
        uint64_t seq = ref.seq;
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

  absl::StatusOr<v1::NackResponse> Nack(const std::vector<DeliveryRef>& refs, absl::Duration delay,
                                        const std::string& reason) override {
    v1::NackResponse resp;
    std::vector<GroupOp> ops;
    std::vector<std::shared_ptr<GroupMember>> wake;
    {
      absl::MutexLock lock(&mu_);
      absl::Time at = broker_->clock()->Now() + delay;
      for (const DeliveryRef& ref : refs) {
        uint64_t seq = ref.seq;
        auto it = pending_.find(seq);
        // A nack of an attempt already redelivered changes nothing.
        if (it == pending_.end() || it->second.awaiting || it->second.attempts != ref.attempt) {
          continue;
        }
        if (RequeueLocked(seq, it->second, at, reason, &ops)) pending_.erase(it);
        resp.set_nacked(resp.nacked() + 1);
      }
      wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
    return resp;
  }

  absl::StatusOr<uint32_t> ModifyDeadline(const std::vector<DeliveryRef>& refs,
                                          absl::Duration deadline) override {
    absl::MutexLock lock(&mu_);
    absl::Time at = broker_->clock()->Now() + deadline;
    uint32_t n = 0;
    for (const DeliveryRef& ref : refs) {
      uint64_t seq = ref.seq;
      auto it = pending_.find(seq);
      if (it == pending_.end() || it->second.awaiting || it->second.attempts != ref.attempt) {
        continue;
      }
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
  void Expire(absl::Time now) override {
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
        if (RequeueLocked(seq, it->second, now, kReasonExpired, &ops)) pending_.erase(it);
      }
      if (!redeliver_.empty() && redeliver_.begin()->first <= now) wake = MembersLocked();
    }
    broker_->EnqueueOps(std::move(ops));
    Wake(wake);
  }

  absl::StatusOr<uint32_t> Replay(const std::vector<DeadLetterRecord>& letters) override {
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

  absl::Status FillStats(v1::GroupStats* s, uint64_t last_seq) override {
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
    return absl::OkStatus();
  }

  void UpdateGauges(uint64_t last_seq) override {
    absl::MutexLock lock(&mu_);
    pending_gauge_->Set(static_cast<double>(pending_.size()));
    uint64_t cursor = CursorLocked();
    lag_gauge_->Set(static_cast<double>(last_seq > cursor ? last_seq - cursor : 0));
  }

  std::vector<std::string> PatternsForStats(int* members) override {
    absl::MutexLock lock(&mu_);
    *members = static_cast<int>(members_.size());
    return filter_.patterns();
  }

  void EndAll(const absl::Status& status) override;

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
  // max_deliveries, `reason` saying what ended that last attempt. Returns
  // true when the caller must erase it from pending_.
  bool RequeueLocked(uint64_t seq, Pending& p, absl::Time available_at, absl::string_view reason,
                     std::vector<GroupOp>* ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ReleaseMemberLocked(p);
    if (!p.awaiting) deadlines_.erase({p.deadline, seq});
    if (p.attempts >= rec_.max_deliveries) {
      GroupOp op = Op(GroupOp::Kind::kDeadLetter, seq, p.attempts);
      op.event = p.ev;
      op.error = std::string(reason);
      ops->push_back(std::move(op));
      ++dead_lettered_;
      dead_letters_metric_->Increment();
      LogWarn("event dead-lettered", {{"group", name_},
                                      {"sequence", seq},
                                      {"attempts", p.attempts},
                                      {"type", p.ev->type},
                                      {"last_error", reason}});
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

  SubscriptionHost* const broker_;
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

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_LOCAL_GROUP_H_
