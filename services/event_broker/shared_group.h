#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_SHARED_GROUP_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_SHARED_GROUP_H_

// A consumer group whose state lives in a store several broker replicas
// share (Redis): the cursor, every pending delivery with its lease, dead
// letters. This replica claims deliveries there for its own members, only as
// many as they have room for, and hands them out; acks, nacks and lease
// changes go to the store, so any replica can take them. A replica that dies
// loses nothing: its leases run out and other replicas claim the deliveries
// again (attempt + 1).

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "services/event_broker/subscriptions.h"

namespace switchboard::broker {

class SharedGroup : public Group, public std::enable_shared_from_this<SharedGroup> {
 public:
  // `owner` names this replica in the store's leases.
  SharedGroup(SubscriptionHost* broker, EventStore* store, std::string owner, GroupRecord rec,
              TypeFilter filter);

  const std::string& name() const override { return name_; }
  absl::Status Join(std::shared_ptr<GroupMember> member, const TypeFilter& filter) override;
  void Leave(GroupMember* member) override;
  std::optional<Outgoing> NextFor(GroupMember* member) override;
  void OfferLive(const std::vector<EventPtr>& events, uint64_t prev_last) override;
  absl::Status ValidateAckIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                              std::vector<DeliveryRef>* refs) override;
  absl::StatusOr<v1::AckResponse> Ack(const std::vector<DeliveryRef>& refs) override;
  absl::StatusOr<v1::NackResponse> Nack(const std::vector<DeliveryRef>& refs, absl::Duration delay,
                                        const std::string& reason) override;
  absl::StatusOr<uint32_t> ModifyDeadline(const std::vector<DeliveryRef>& refs,
                                          absl::Duration deadline) override;
  void Expire(absl::Time now) override;
  absl::StatusOr<uint32_t> Replay(const std::vector<DeadLetterRecord>& letters) override;
  absl::Status FillStats(v1::GroupStats* s, uint64_t last_seq) override;
  void UpdateGauges(uint64_t last_seq) override;
  std::vector<std::string> PatternsForStats(int* members) override;
  void EndAll(const absl::Status& status) override;

 private:
  struct Ready {
    EventPtr ev;
    uint32_t attempt;
    absl::Time lease_end;  // after it the delivery may be another replica's
  };

  // Deliveries this replica's members could take now, beyond those ready.
  size_t RoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Something may have made deliveries claimable: claims now, or once the
  // claim in flight ends, or once a slot frees.
  void MaybeClaimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A slot freed or the ready queue ran low: claims if backlog_.
  void MaybeRefillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On the broker's fill thread.
  void Claim();
  // Forgets a delivery handed to a member here (any attempt, or only
  // `attempt`); true when the member was at its in-flight limit before.
  bool ReleaseLocked(uint64_t seq, uint32_t attempt = 0) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives deliveries this replica holds back to the store (due now), from
  // the fill thread.
  void GiveBackLater(std::vector<DeliveryRef> refs, const char* reason);
  std::vector<std::shared_ptr<GroupMember>> MembersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return members_;
  }
  static void Wake(const std::vector<std::shared_ptr<GroupMember>>& members);

  SubscriptionHost* const broker_;
  EventStore* const store_;
  const std::string owner_;
  const std::string name_;
  absl::Mutex mu_;
  GroupRecord rec_ ABSL_GUARDED_BY(mu_);
  TypeFilter filter_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<GroupMember>> members_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<const GroupMember*, uint32_t> in_flight_ ABSL_GUARDED_BY(mu_);
  // Handed to a member here and not yet acked (as far as this replica knows).
  struct Held {
    GroupMember* member;
    uint32_t attempt;
  };
  absl::flat_hash_map<uint64_t, Held> held_ ABSL_GUARDED_BY(mu_);
  // A member here changed the filter: the next claim stores it.
  bool types_dirty_ ABSL_GUARDED_BY(mu_) = false;
  // Claimed (leased to this replica), not yet handed to a member.
  std::deque<Ready> ready_ ABSL_GUARDED_BY(mu_);
  bool claim_pending_ ABSL_GUARDED_BY(mu_) = false;
  // The store may hold deliveries for this group that no claim has looked
  // for: the last claim stopped at its max or failed, or since it began an
  // event was stored, a delivery was nacked, given back or revived, a member
  // joined, or the reconcile ran. A freed slot (an ack) or an emptied ready
  // queue claims only then: a claim that finds nothing costs a store round
  // trip, and one in flight makes the next event wait for it.
  bool backlog_ ABSL_GUARDED_BY(mu_) = true;
  // When deliveries nacked here with a delay come due: Expire (every
  // housekeeping pass, 50 ms) claims then, not only at its reconcile (every
  // 250 ms, which also covers what does not fit here).
  std::set<absl::Time> nack_due_ ABSL_GUARDED_BY(mu_);
  absl::Time next_reconcile_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time next_gauges_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  prometheus::Counter* redeliveries_metric_;
  prometheus::Counter* dead_letters_metric_;
  prometheus::Gauge* pending_gauge_;
  prometheus::Gauge* lag_gauge_;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_SHARED_GROUP_H_
