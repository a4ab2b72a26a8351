#include "services/event_broker/local_group.h"

namespace switchboard::broker {

bool LocalGroup::ReleaseMemberLocked(Pending& p) {
  bool was_blocked = false;
  if (p.member != nullptr) {
    uint32_t& n = in_flight_[p.member];
    was_blocked = n >= p.member->max_in_flight_;
    --n;
    p.member = nullptr;
  }
  return was_blocked;
}

void LocalGroup::Wake(const std::vector<std::shared_ptr<GroupMember>>& members) {
  for (const auto& m : members) m->Wake();
}

absl::Status LocalGroup::Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter) {
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

void LocalGroup::Leave(GroupMember* member) {
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
      if (it->second.member == member &&
          RequeueLocked(it->first, it->second, now, kReasonMemberLeft, &ops)) {
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

std::optional<Outgoing> LocalGroup::NextFor(GroupMember* member) {
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

void LocalGroup::EndAll(const absl::Status& status) {
  std::vector<std::shared_ptr<GroupMember>> members;
  {
    absl::MutexLock lock(&mu_);
    members = members_;
  }
  for (const auto& m : members) m->End(status);
}

}  // namespace switchboard::broker
