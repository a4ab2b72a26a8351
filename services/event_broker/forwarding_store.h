#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_FORWARDING_STORE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_FORWARDING_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "services/event_broker/event_store.h"

namespace switchboard::broker {

// An EventStore that hands every call to another one: the base of stores
// that change one behaviour of a real store (a throttle, test faults).
// Except TryCommitNow: forwarded, it would commit past a Commit the
// subclass changed, so such a store never commits inline.
class ForwardingEventStore : public EventStore {
 public:
  explicit ForwardingEventStore(std::unique_ptr<EventStore> inner) : inner_(std::move(inner)) {}

  absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) override {
    return inner_->Commit(batch, now);
  }
  absl::StatusOr<std::vector<EventPtr>> ReadAfter(uint64_t after, size_t limit) override {
    return inner_->ReadAfter(after, limit);
  }
  absl::StatusOr<EventPtr> ReadOne(uint64_t seq) override { return inner_->ReadOne(seq); }
  absl::StatusOr<std::vector<EventPtr>> Query(const HistoryQuery& q) override {
    return inner_->Query(q);
  }
  absl::StatusOr<uint64_t> FirstSequenceAtOrAfter(absl::Time t) override {
    return inner_->FirstSequenceAtOrAfter(t);
  }
  absl::StatusOr<std::vector<EventPtr>> ReadIngestedSince(absl::Time since) override {
    return inner_->ReadIngestedSince(since);
  }
  absl::StatusOr<StoreBounds> Bounds() override { return inner_->Bounds(); }
  absl::StatusOr<std::vector<GroupRecord>> LoadGroups() override { return inner_->LoadGroups(); }
  absl::StatusOr<std::vector<PendingRecord>> LoadPending(const std::string& group) override {
    return inner_->LoadPending(group);
  }
  absl::StatusOr<std::vector<DeadLetterRecord>> ListDeadLetters(const std::string& group,
                                                                uint64_t after_seq,
                                                                size_t limit) override {
    return inner_->ListDeadLetters(group, after_seq, limit);
  }
  absl::StatusOr<uint64_t> CountDeadLetters(const std::string& group) override {
    return inner_->CountDeadLetters(group);
  }
  absl::StatusOr<uint64_t> ApplyRetention(absl::Time now, absl::Duration max_age,
                                          uint64_t max_count, uint64_t max_delete) override {
    return inner_->ApplyRetention(now, max_age, max_count, max_delete);
  }
  uint64_t StorageBytes() override { return inner_->StorageBytes(); }
  absl::Status Check() override { return inner_->Check(); }
  bool shared() const override { return inner_->shared(); }
  absl::StatusOr<std::vector<EventPtr>> WaitForAppends(uint64_t after_seq, size_t limit,
                                                       absl::Duration timeout) override {
    return inner_->WaitForAppends(after_seq, limit, timeout);
  }
  absl::Status PublishLoad(const ReplicaLoad& load, absl::Duration ttl) override {
    return inner_->PublishLoad(load, ttl);
  }
  absl::StatusOr<std::vector<ReplicaLoad>> ListLoads() override { return inner_->ListLoads(); }
  absl::StatusOr<ClaimResult> Claim(const ClaimRequest& request, absl::Time now) override {
    return inner_->Claim(request, now);
  }
  absl::StatusOr<uint32_t> AckDeliveries(const std::string& group,
                                         const std::vector<uint64_t>& seqs) override {
    return inner_->AckDeliveries(group, seqs);
  }
  absl::StatusOr<uint32_t> Requeue(const std::string& group, const std::vector<DeliveryRef>& refs,
                                   absl::Time at, const std::string& reason) override {
    return inner_->Requeue(group, refs, at, reason);
  }
  absl::StatusOr<uint32_t> Revive(const std::string& group, const std::vector<uint64_t>& seqs,
                                  absl::Time at) override {
    return inner_->Revive(group, seqs, at);
  }
  absl::StatusOr<uint32_t> GiveBack(const std::string& group, const std::string& owner,
                                    const std::vector<DeliveryRef>& refs, absl::Time at,
                                    const std::string& reason) override {
    return inner_->GiveBack(group, owner, refs, at, reason);
  }
  absl::StatusOr<uint32_t> ExtendLeases(const std::string& group,
                                        const std::vector<DeliveryRef>& refs,
                                        absl::Time until) override {
    return inner_->ExtendLeases(group, refs, until);
  }
  absl::StatusOr<std::vector<uint64_t>> StillHeld(const std::string& group,
                                                  const std::string& owner,
                                                  const std::vector<uint64_t>& seqs,
                                                  absl::Time now) override {
    return inner_->StillHeld(group, owner, seqs, now);
  }
  absl::StatusOr<SharedGroupStats> GroupStats(const std::string& group) override {
    return inner_->GroupStats(group);
  }

 private:
  std::unique_ptr<EventStore> inner_;
};

// A store no faster than `bytes_per_second` for appended events: a slow disk
// on purpose, for overload tests (event-broker --test_store_bytes_per_sec).
class ThrottledEventStore : public ForwardingEventStore {
 public:
  ThrottledEventStore(std::unique_ptr<EventStore> inner, int64_t bytes_per_second)
      : ForwardingEventStore(std::move(inner)), bytes_per_second_(bytes_per_second) {}

  absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) override {
    int64_t bytes = 0;
    for (const NewEvent* e : batch.events) bytes += static_cast<int64_t>(e->payload.size());
    absl::SleepFor(absl::Seconds(static_cast<double>(bytes) / bytes_per_second_));
    return ForwardingEventStore::Commit(batch, now);
  }

 private:
  const int64_t bytes_per_second_;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_FORWARDING_STORE_H_
