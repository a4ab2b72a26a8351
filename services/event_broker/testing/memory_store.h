#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_TESTING_MEMORY_STORE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_TESTING_MEMORY_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "services/event_broker/event_store.h"

namespace switchboard::broker {

// One store's data (log, dedupe keys, groups, replica loads) behind one
// mutex. Every MemoryEventStore over the same state sees the same data, as
// replicas sharing one Redis do. Defined in memory_store.cc.
struct MemoryStoreState;

// An in-memory fake of a *shared* store (shared() is true) for unit tests:
// the same semantics as RedisEventStore and its Lua scripts (redis_scripts.h,
// redis_group_scripts.h), without a server. Differences, none of them part
// of the EventStore contract:
//  - the dedupe window is measured with the commit's `now` (Redis uses its
//    own clock), so tests with a fake clock are deterministic;
//  - due redeliveries with the same due time are claimed in sequence order
//    (a Redis sorted set orders ties by the member string: "10" before "4");
//  - history queries have no scan budget (Redis looks at 20000 candidates at
//    most per call) and correlation/subject lookups never expire;
//  - replica loads keep events_per_second exactly;
//  - a call's reply cannot be lost, so commits and claims need no retry
//    tokens, and group names need no encoding.
// Thread-safe. Nothing is persisted: the state lives as long as a store or
// a test holds it.
class MemoryEventStore : public EventStore {
 public:
  static std::shared_ptr<MemoryStoreState> NewState();

  // A client id published again within `dedupe_window` (by any store over
  // `state`) is a duplicate; a window under 1 ms turns deduplication off.
  explicit MemoryEventStore(std::shared_ptr<MemoryStoreState> state = NewState(),
                            absl::Duration dedupe_window = absl::Minutes(2));

  const std::shared_ptr<MemoryStoreState>& state() const { return state_; }

  absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) override;
  absl::StatusOr<std::vector<EventPtr>> ReadAfter(uint64_t after_seq, size_t limit) override;
  absl::StatusOr<EventPtr> ReadOne(uint64_t seq) override;
  absl::StatusOr<std::vector<EventPtr>> Query(const HistoryQuery& query) override;
  absl::StatusOr<uint64_t> FirstSequenceAtOrAfter(absl::Time t) override;
  absl::StatusOr<std::vector<EventPtr>> ReadIngestedSince(absl::Time since) override;
  absl::StatusOr<StoreBounds> Bounds() override;
  absl::StatusOr<std::vector<GroupRecord>> LoadGroups() override;
  absl::StatusOr<std::vector<PendingRecord>> LoadPending(const std::string& group) override;
  absl::StatusOr<std::vector<DeadLetterRecord>> ListDeadLetters(const std::string& group,
                                                                uint64_t after_seq,
                                                                size_t limit) override;
  absl::StatusOr<uint64_t> CountDeadLetters(const std::string& group) override;
  absl::StatusOr<uint64_t> ApplyRetention(absl::Time now, absl::Duration max_age,
                                          uint64_t max_count, uint64_t max_delete) override;
  // The payload bytes in the log.
  uint64_t StorageBytes() override;

  bool shared() const override { return true; }
  absl::StatusOr<std::vector<EventPtr>> WaitForAppends(uint64_t after_seq, size_t limit,
                                                       absl::Duration timeout) override;
  // Loads expire by real time (absl::Now()), as in Redis.
  absl::Status PublishLoad(const ReplicaLoad& load, absl::Duration ttl) override;
  absl::StatusOr<std::vector<ReplicaLoad>> ListLoads() override;
  absl::StatusOr<ClaimResult> Claim(const ClaimRequest& request, absl::Time now) override;
  absl::StatusOr<uint32_t> AckDeliveries(const std::string& group,
                                         const std::vector<uint64_t>& seqs) override;
  absl::StatusOr<uint32_t> Requeue(const std::string& group, const std::vector<DeliveryRef>& refs,
                                   absl::Time at, const std::string& reason) override;
  absl::StatusOr<uint32_t> Revive(const std::string& group, const std::vector<uint64_t>& seqs,
                                  absl::Time at) override;
  absl::StatusOr<uint32_t> GiveBack(const std::string& group, const std::string& owner,
                                    const std::vector<DeliveryRef>& refs, absl::Time at,
                                    const std::string& reason) override;
  absl::StatusOr<uint32_t> ExtendLeases(const std::string& group,
                                        const std::vector<DeliveryRef>& refs,
                                        absl::Time until) override;
  absl::StatusOr<std::vector<uint64_t>> StillHeld(const std::string& group,
                                                  const std::string& owner,
                                                  const std::vector<uint64_t>& seqs,
                                                  absl::Time now) override;
  absl::StatusOr<SharedGroupStats> GroupStats(const std::string& group) override;

 private:
  absl::StatusOr<uint32_t> Release(const std::string& group, const std::string* owner,
                                   const std::vector<DeliveryRef>& refs, absl::Time at,
                                   const std::string& reason);

  const std::shared_ptr<MemoryStoreState> state_;
  const absl::Duration dedupe_window_;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_TESTING_MEMORY_STORE_H_
