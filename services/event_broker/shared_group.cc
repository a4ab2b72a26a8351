#include "services/event_broker/shared_group.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_join.h"
#include "libs/common/json_log.h"

namespace switchboard::broker {
namespace {

// Deliveries one claim asks for at most.
constexpr size_t kClaimMax = 512;
// A claim's lease covers the longest ack deadline of the members here plus
// this, for the time a delivery waits to be handed out; one that would not
// have a member's full deadline left is given back instead.
constexpr absl::Duration kLeaseMargin = absl::Seconds(5);
// How often held deliveries are checked against the store (acked through
// another replica, lease run out) and due redeliveries are looked for.
constexpr absl::Duration kReconcileEvery = absl::Milliseconds(250);
// Due times of delayed nacks kept to claim at (SharedGroup::nack_due_).
constexpr size_t kMaxNackDue = 1024;

}  // namespace

SharedGroup::SharedGroup(SubscriptionHost* broker, EventStore* store, std::string owner,
                         GroupRecord rec, TypeFilter filter)
    : broker_(broker),
      store_(store),
      owner_(std::move(owner)),
      name_(rec.name),
      rec_(std::move(rec)),
      filter_(std::move(filter)),
      redeliveries_metric_(&broker->metrics()->group_redeliveries.Add({{"group", name_}})),
      dead_letters_metric_(&broker->metrics()->group_dead_letters.Add({{"group", name_}})),
      pending_gauge_(&broker->metrics()->group_pending.Add({{"group", name_}})),
      lag_gauge_(&broker->metrics()->group_lag.Add({{"group", name_}})) {}

void SharedGroup::Wake(const std::vector<std::shared_ptr<GroupMember>>& members) {
  for (const auto& m : members) m->Wake();
}

size_t SharedGroup::RoomLocked() const {
  size_t room = 0;
  for (const auto& m : members_) {
    auto it = in_flight_.find(m.get());
    uint32_t used = it == in_flight_.end() ? 0 : it->second;
    if (!m->closed() && used < m->max_in_flight_) room += m->max_in_flight_ - used;
  }
  return room > ready_.size() ? room - ready_.size() : 0;
}

void SharedGroup::MaybeClaimLocked() {
  backlog_ = true;
  if (claim_pending_ || members_.empty() || RoomLocked() == 0) return;
  claim_pending_ = true;
  broker_->RequestFill([self = shared_from_this()] { self->Claim(); });
}

void SharedGroup::MaybeRefillLocked() {
  if (backlog_) MaybeClaimLocked();
}

void SharedGroup::Claim() {
  ClaimRequest req;
  {
    absl::MutexLock lock(&mu_);
    size_t room = RoomLocked();
    if (members_.empty() || room == 0 || broker_->shutting_down()) {
      claim_pending_ = false;
      return;
    }
    // This claim looks at everything made claimable before now.
    backlog_ = false;
    req.group = rec_;
    req.group.types = filter_.patterns();
    req.set_types = types_dirty_;
    types_dirty_ = false;
    req.owner = owner_;
    req.max = std::min(room, kClaimMax);
    absl::Duration longest = absl::ZeroDuration();
    for (const auto& m : members_) longest = std::max(longest, m->ack_deadline_);
    req.lease = longest + kLeaseMargin;
  }
  absl::Time claimed_at = broker_->clock()->Now();
  absl::StatusOr<ClaimResult> r = store_->Claim(req, claimed_at);
  std::vector<std::shared_ptr<GroupMember>> wake;
  std::vector<DeliveryRef> give_back;
  {
    absl::MutexLock lock(&mu_);
    claim_pending_ = false;
    if (!r.ok()) {
      // Housekeeping tries again (Expire); subscribers keep what they have.
      backlog_ = true;
      if (req.set_types) types_dirty_ = true;
      LogWarn("group claim failed", {{"group", name_}, {"error", r.status().ToString()}});
      return;
    }
    // Every replica claims with the group's stored filter.
    // (Not while a member's newer filter waits for the next claim to store it.)
    if (!types_dirty_ && r->types != filter_.patterns()) {
      absl::StatusOr<TypeFilter> stored = TypeFilter::Parse(r->types);
      if (stored.ok()) filter_ = *std::move(stored);
    }
    for (ClaimedDelivery& d : r->deliveries) {
      ready_.push_back(Ready{std::move(d.event), d.attempt, claimed_at + req.lease});
    }
    if (members_.empty()) {
      // Everyone left while we claimed: the deliveries go back now.
      for (const Ready& rd : ready_) give_back.push_back(DeliveryRef{rd.ev->seq, rd.attempt});
      ready_.clear();
    } else {
      if (r->more) backlog_ = true;
      // More to claim, or made claimable while this claim was reading.
      if (backlog_) MaybeClaimLocked();
      if (!ready_.empty()) wake = MembersLocked();
    }
  }
  if (r->redelivered > 0) redeliveries_metric_->Increment(r->redelivered);
  if (r->dead_lettered > 0) {
    dead_letters_metric_->Increment(r->dead_lettered);
    LogWarn("events dead-lettered", {{"group", name_}, {"count", r->dead_lettered}});
  }
  if (!give_back.empty()) GiveBackLater(std::move(give_back), kReasonMemberLeft);
  Wake(wake);
}

void SharedGroup::GiveBackLater(std::vector<DeliveryRef> refs, const char* reason) {
  broker_->RequestFill([self = shared_from_this(), refs = std::move(refs), reason] {
    absl::Status st =
        self->store_
            ->GiveBack(self->name_, self->owner_, refs, self->broker_->clock()->Now(), reason)
            .status();
    if (!st.ok()) {
      // Their leases run out instead: redelivered after the ack deadline.
      LogWarn("cannot give deliveries back", {{"group", self->name_}, {"error", st.ToString()}});
      return;
    }
    absl::MutexLock lock(&self->mu_);
    self->MaybeClaimLocked();  // due again now, for the members here too
  });
}

absl::Status SharedGroup::Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter) {
  absl::MutexLock lock(&mu_);
  if (broker_->shutting_down()) return absl::UnavailableError("broker is shutting down");
  if (filter.patterns() != filter_.patterns()) {
    // Like a JetStream consumer update: the group's filter follows its
    // newest member, on every replica (the next claim stores it).
    LogInfo("group filter changed", {{"group", name_},
                                     {"from", absl::StrJoin(filter_.patterns(), ",")},
                                     {"to", absl::StrJoin(filter.patterns(), ",")}});
    filter_ = filter;
    types_dirty_ = true;
  }
  members_.push_back(std::move(member));
  MaybeClaimLocked();
  return absl::OkStatus();
}

void SharedGroup::Leave(GroupMember* member) {
  std::vector<DeliveryRef> give_back;
  std::vector<std::shared_ptr<GroupMember>> wake;
  {
    absl::MutexLock lock(&mu_);
    members_.erase(std::remove_if(members_.begin(), members_.end(),
                                  [&](const auto& m) { return m.get() == member; }),
                   members_.end());
    // What it held goes to the others now rather than at its deadline.
    // (At its attempt only: one claimed again since is not touched.)
    for (auto it = held_.begin(); it != held_.end();) {
      if (it->second.member == member) {
        give_back.push_back(DeliveryRef{it->first, it->second.attempt});
        held_.erase(it++);
      } else {
        ++it;
      }
    }
    in_flight_.erase(member);
    if (members_.empty()) {
      for (const Ready& rd : ready_) give_back.push_back(DeliveryRef{rd.ev->seq, rd.attempt});
      ready_.clear();
    }
    wake = MembersLocked();
  }
  if (!give_back.empty()) GiveBackLater(std::move(give_back), kReasonMemberLeft);
  Wake(wake);
}

std::optional<Outgoing> SharedGroup::NextFor(GroupMember* member) {
  std::vector<DeliveryRef> give_back;
  std::optional<Outgoing> out;
  {
    absl::MutexLock lock(&mu_);
    uint32_t used = in_flight_[member];
    if (member->closed() || used >= member->max_in_flight_) return std::nullopt;
    // A delivery that waited so long that its lease no longer covers this
    // member's ack deadline goes back (another replica may claim it when the
    // lease ends; handing it out could give it to two members at once).
    absl::Time now = broker_->clock()->Now();
    while (!ready_.empty() && ready_.front().lease_end - now < member->ack_deadline_) {
      give_back.push_back(DeliveryRef{ready_.front().ev->seq, ready_.front().attempt});
      ready_.pop_front();
    }
    if (ready_.empty()) {
      MaybeRefillLocked();
    } else {
      Ready rd = std::move(ready_.front());
      ready_.pop_front();
      uint64_t seq = rd.ev->seq;
      // Claimed again while still counted here (its lease ran out before the
      // reconcile noticed): the earlier delivery is superseded.
      ReleaseLocked(seq);
      held_[seq] = Held{member, rd.attempt};
      ++in_flight_[member];
      if (ready_.size() < kClaimMax / 4) MaybeRefillLocked();
      out = Outgoing{std::move(rd.ev), rd.attempt, MakeAckId(seq, rd.attempt)};
    }
  }
  if (!give_back.empty()) GiveBackLater(std::move(give_back), kReasonLeaseShort);
  return out;
}

void SharedGroup::OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) {
  absl::MutexLock lock(&mu_);
  for (const EventPtr& ev : events) {
    if (filter_.Matches(ev->type)) {
      MaybeClaimLocked();
      return;
    }
  }
}

// Whether they were ever handed out, the store checks (in the same script
// that applies them).
absl::Status SharedGroup::ValidateAckIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                                         std::vector<DeliveryRef>* refs) {
  return ParseAckIds(ids, refs);
}

bool SharedGroup::ReleaseLocked(uint64_t seq, uint32_t attempt) {
  auto it = held_.find(seq);
  if (it == held_.end() || (attempt != 0 && it->second.attempt != attempt)) return false;
  GroupMember* m = it->second.member;
  held_.erase(it);
  auto f = in_flight_.find(m);
  if (f == in_flight_.end() || f->second == 0) return false;
  bool was_full = f->second >= m->max_in_flight_;
  --f->second;
  return was_full;
}

absl::StatusOr<v1::AckResponse> SharedGroup::Ack(const std::vector<DeliveryRef>& refs) {
  std::vector<uint64_t> seqs;
  for (const DeliveryRef& r : refs) seqs.push_back(r.seq);
  absl::StatusOr<uint32_t> acked = store_->AckDeliveries(name_, seqs);
  if (!acked.ok()) return acked.status();
  std::vector<std::shared_ptr<GroupMember>> wake;
  {
    absl::MutexLock lock(&mu_);
    bool unblocked = false;
    // The event was handled: whatever attempt of it is held here is done.
    for (uint64_t s : seqs) unblocked |= ReleaseLocked(s);
    if (unblocked) wake = MembersLocked();
    MaybeRefillLocked();
  }
  Wake(wake);
  v1::AckResponse resp;
  resp.set_acked(*acked);
  resp.set_already_acked(static_cast<uint32_t>(seqs.size()) - *acked);
  return resp;
}

absl::StatusOr<v1::NackResponse> SharedGroup::Nack(const std::vector<DeliveryRef>& refs,
                                                   absl::Duration delay,
                                                   const std::string& reason) {
  absl::Time due = broker_->clock()->Now() + delay;
  absl::StatusOr<uint32_t> n = store_->Requeue(name_, refs, due, reason);
  if (!n.ok()) return n.status();
  std::vector<std::shared_ptr<GroupMember>> wake;
  {
    absl::MutexLock lock(&mu_);
    for (const DeliveryRef& r : refs) ReleaseLocked(r.seq, r.attempt);
    wake = MembersLocked();
    if (delay <= absl::ZeroDuration()) {
      MaybeClaimLocked();  // due again now
    } else {
      if (nack_due_.size() < kMaxNackDue) nack_due_.insert(due);
      MaybeRefillLocked();  // their slots are free
    }
  }
  Wake(wake);
  v1::NackResponse resp;
  resp.set_nacked(*n);
  return resp;
}

absl::StatusOr<uint32_t> SharedGroup::ModifyDeadline(const std::vector<DeliveryRef>& refs,
                                                     absl::Duration deadline) {
  return store_->ExtendLeases(name_, refs, broker_->clock()->Now() + deadline);
}

void SharedGroup::Expire(absl::Time now) {
  std::vector<uint64_t> held;
  std::vector<Held> snapshot;
  {
    absl::MutexLock lock(&mu_);
    if (!nack_due_.empty() && *nack_due_.begin() <= now) {
      nack_due_.erase(nack_due_.begin(), nack_due_.upper_bound(now));
      MaybeClaimLocked();
    }
    if (now < next_reconcile_) return;
    next_reconcile_ = now + kReconcileEvery;
    held.reserve(held_.size());
    for (const auto& [seq, h] : held_) {
      held.push_back(seq);
      snapshot.push_back(h);
    }
  }
  // Deliveries acked through another replica, or whose lease ran out (they
  // are someone else's now), stop counting against our members.
  absl::flat_hash_set<uint64_t> still;
  bool checked = true;
  if (!held.empty()) {
    absl::StatusOr<std::vector<uint64_t>> s = store_->StillHeld(name_, owner_, held, now);
    if (s.ok()) {
      still.insert(s->begin(), s->end());
    } else {
      checked = false;
    }
  }
  std::vector<std::shared_ptr<GroupMember>> wake;
  {
    absl::MutexLock lock(&mu_);
    bool unblocked = false;
    if (checked) {
      for (size_t i = 0; i < held.size(); ++i) {
        if (still.contains(held[i])) continue;
        // Only the delivery that was checked: not one handed out since.
        auto it = held_.find(held[i]);
        if (it != held_.end() && it->second.member == snapshot[i].member) {
          unblocked |= ReleaseLocked(held[i], snapshot[i].attempt);
        }
      }
    }
    if (unblocked) wake = MembersLocked();
    // Redeliveries come due in the store, not here: look for them.
    MaybeClaimLocked();
  }
  Wake(wake);
}

absl::StatusOr<uint32_t> SharedGroup::Replay(const std::vector<DeadLetterRecord>& letters) {
  std::vector<uint64_t> seqs;
  for (const DeadLetterRecord& d : letters) seqs.push_back(d.event->seq);
  absl::StatusOr<uint32_t> n = store_->Revive(name_, seqs, broker_->clock()->Now());
  if (!n.ok()) return n.status();
  absl::MutexLock lock(&mu_);
  MaybeClaimLocked();
  return n;
}

absl::Status SharedGroup::FillStats(v1::GroupStats* s, uint64_t last_seq) {
  absl::StatusOr<SharedGroupStats> st = store_->GroupStats(name_);
  if (!st.ok()) return st.status();
  absl::MutexLock lock(&mu_);
  s->set_name(name_);
  for (const std::string& t : filter_.patterns()) s->add_types(t);
  s->set_pending(st->pending);
  s->set_lag(last_seq > st->cursor ? last_seq - st->cursor : 0);
  s->set_redelivered(st->redelivered);
  s->set_dead_lettered(st->dead_lettered);
  s->set_cursor(st->cursor);
  s->set_members(static_cast<uint32_t>(members_.size()));
  return absl::OkStatus();
}

void SharedGroup::UpdateGauges(uint64_t last_seq) {
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = absl::Now();
    if (now < next_gauges_) return;
    next_gauges_ = now + absl::Seconds(1);
  }
  absl::StatusOr<SharedGroupStats> st = store_->GroupStats(name_);
  if (!st.ok()) return;
  pending_gauge_->Set(static_cast<double>(st->pending));
  lag_gauge_->Set(static_cast<double>(last_seq > st->cursor ? last_seq - st->cursor : 0));
}

std::vector<std::string> SharedGroup::PatternsForStats(int* members) {
  absl::MutexLock lock(&mu_);
  *members = static_cast<int>(members_.size());
  return filter_.patterns();
}

void SharedGroup::EndAll(const absl::Status& status) {
  std::vector<std::shared_ptr<GroupMember>> members;
  {
    absl::MutexLock lock(&mu_);
    members = members_;
  }
  for (const auto& m : members) m->End(status);
}

}  // namespace switchboard::broker
