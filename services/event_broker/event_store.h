#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_EVENT_STORE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_EVENT_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "switchboard/events/v1/event.pb.h"

namespace switchboard::broker {

// A committed event, shared read-only between the tail cache, subscribers and
// in-flight gRPC writes. It is kept serialized: subscribers receive these bytes
// as they are (no parse, no re-serialization per delivery); only cold paths
// (history, stats) parse it.
struct StoredEvent {
  uint64_t seq = 0;
  absl::Time ingest_time;
  std::string type;
  // Serialized events.v1.Event with id and time set, without `sequence`.
  std::string payload;

  // The event as a message, sequence included.
  events::v1::Event Parse() const {
    events::v1::Event ev;
    ev.ParseFromString(payload);
    ev.set_sequence(seq);
    return ev;
  }
};
using EventPtr = std::shared_ptr<const StoredEvent>;

// An event ready to append: validated, id and time assigned, serialized.
struct NewEvent {
  std::string payload;
  std::string type;
  std::string id;
  std::string source;
  std::string correlation_id;
  std::string subject;
  int64_t time_us = 0;
  // The client chose the id: publishing it again is deduplicated.
  bool client_id = false;
};

struct GroupRecord {
  std::string name;
  std::vector<std::string> types;
  // Every event <= cursor was delivered, acked or did not match.
  uint64_t cursor = 0;
  uint32_t max_deliveries = 5;
};

// A delivered, unacked event of a group, with how often it was delivered.
struct PendingRecord {
  uint64_t seq = 0;
  uint32_t attempts = 0;
};

struct DeadLetterRecord {
  std::string group;
  EventPtr event;
  uint32_t attempts = 0;
  absl::Time dead_at;
  // What ended the last attempt (one of the reasons below, or a nack's own).
  std::string last_error;
};

// Why an attempt ended without an ack, when the subscriber said nothing.
inline constexpr char kReasonExpired[] = "ack deadline expired";
inline constexpr char kReasonNacked[] = "nacked";
inline constexpr char kReasonMemberLeft[] = "subscriber left before acking";
inline constexpr char kReasonLeaseShort[] =
    "handed back unsent: its lease ran short while it waited for a subscriber";

// Group state changes. They ride along with the next commit, so acks and
// deliveries cost no extra transaction of their own under load.
struct GroupOp {
  enum class Kind {
    kUpsertGroup,       // group (name, types, cursor, max_deliveries)
    kSetCursor,         // group.name, group.cursor
    kSetPending,        // group.name, seq, attempts
    kRemovePending,     // group.name, seq
    kDeadLetter,        // group.name, seq, attempts, event, error: removes pending too
    kRemoveDeadLetter,  // group.name, seq
  };
  Kind kind;
  GroupRecord group;
  uint64_t seq = 0;
  uint32_t attempts = 0;
  EventPtr event;
  std::string error;  // kDeadLetter: what ended the last attempt
  // kSetPending of a first delivery: no row can exist yet, so a later
  // kRemovePending in the same commit cancels both.
  bool first_write = false;
};

// Publishing source+id again within the store's dedupe window is a
// duplicate (NewEvent::client_id events only).
inline std::string DedupeKey(absl::string_view source, absl::string_view id) {
  return absl::StrCat(source, "\x1f", id);
}

struct DedupeOptions {
  absl::Duration window = absl::Minutes(2);
  // The embedded store keeps keys in memory: past this many it forgets the
  // oldest early. (Redis keeps one key per id for the window.)
  size_t max_keys = 2'000'000;
};

struct CommitResult {
  // The sequence of the first appended event; 0 when none was appended.
  uint64_t first = 0;
  // Per batch event, in order: 0 when it was appended (the appended events
  // have consecutive sequences from `first`), else the sequence of the event
  // with the same source+id it duplicates (appended before, or earlier in
  // this batch), and it was not appended.
  std::vector<uint64_t> duplicate_of;
  size_t appended() const {
    size_t n = 0;
    for (uint64_t d : duplicate_of) n += d == 0;
    return n;
  }
};

struct WriteBatch {
  // Events to append, in order; the store assigns consecutive sequences.
  std::vector<const NewEvent*> events;
  std::vector<GroupOp> ops;
  // The highest sequence the committing broker has seen. A shared store
  // assigns above it even if it lost those entries (a Redis failover), so
  // a sequence subscribers saw is never handed out again.
  uint64_t seq_floor = 0;
};

struct HistoryQuery {
  size_t limit = 100;
  std::vector<std::string> exact_types;    // OR-ed with prefixes; both empty = all
  std::vector<std::string> type_prefixes;  // "order."
  std::string correlation_id;
  std::string subject;
  absl::Time since = absl::InfinitePast();
  uint64_t before_sequence = 0;  // 0 = no bound
};

struct StoreBounds {
  uint64_t first_seq = 0;  // 0 when empty
  uint64_t last_seq = 0;   // the last sequence ever assigned (survives retention)
  uint64_t count = 0;
};

// What one broker process serves, for GetStats on a shared store to sum over
// every replica.
struct ReplicaLoad {
  std::string replica;
  uint32_t subscribers = 0;
  double events_per_second = 0;
  std::map<std::string, uint32_t> subscriptions_by_type;
  std::map<std::string, uint32_t> group_members;
};

// One delivery of a group, as its ack id names it.
struct DeliveryRef {
  uint64_t seq = 0;
  uint32_t attempt = 0;
};

// Groups on a shared store: a replica leases deliveries for its members.
struct ClaimRequest {
  // Created with these if new; its types and max_deliveries follow the
  // newest member's.
  GroupRecord group;
  std::string owner;  // the replica
  size_t max = 64;
  absl::Duration lease = absl::Seconds(30);  // the members' ack deadline
  size_t max_scan = 4096;                    // log entries one claim looks at
  // A member here changed the group's filter: group.types replace the
  // stored ones (else the stored filter, the same for every replica, wins).
  bool set_types = false;
};
struct ClaimedDelivery {
  EventPtr event;
  uint32_t attempt = 1;
};
struct ClaimResult {
  std::vector<ClaimedDelivery> deliveries;
  uint32_t dead_lettered = 0;
  uint32_t redelivered = 0;
  bool more = false;               // stopped at max or max_scan: claim again
  std::vector<std::string> types;  // the group's filter, as stored
};
struct SharedGroupStats {
  uint64_t pending = 0;
  uint64_t cursor = 0;
  uint64_t redelivered = 0;
  uint64_t dead_lettered = 0;
};

// A commit handed to the store whose answer is collected later (StartCommit).
class PendingCommit {
 public:
  virtual ~PendingCommit() = default;
  // The commit's outcome, as Commit would have answered it. Called once.
  virtual absl::StatusOr<CommitResult> Wait() = 0;
};

// Storage of the event log and of consumer-group state. The SQLite store is
// the embedded default; a Redis Streams store implements the same interface.
// Nothing above this interface may assume which one it is.
class EventStore {
 public:
  virtual ~EventStore() = default;

  // Appends batch.events with sequences after the last one ever assigned and
  // applies batch.ops, atomically and durably (per the store's sync policy).
  // An event whose source+id was appended within the dedupe window (by any
  // broker sharing the store) is not appended again.
  virtual absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) = 0;

  // Commit, on the caller's thread, only when it cannot wait on anything: no
  // lock held by other work, no fsync, no round trip, no checkpoint. The
  // broker commits a lone publish this way on the RPC's own thread, sparing
  // it two thread hand-offs. nullopt: not now (nothing was written).
  virtual std::optional<absl::StatusOr<CommitResult>> TryCommitNow(const WriteBatch& batch,
                                                                   absl::Time now) {
    return std::nullopt;
  }
  // False when TryCommitNow never commits (the default).
  virtual bool commits_now() const { return false; }

  // Commit in two halves, so the caller can prepare its next commit while
  // this one is applied (a remote store: the round trip and the server's
  // work overlap the broker's). Commits started before earlier ones are
  // waited for are applied in the order started, unless one fails and is
  // resent; callers pipeline only commits whose relative order does not
  // matter to them. The batch need not outlive the call. By default the
  // commit is applied right here.
  virtual std::unique_ptr<PendingCommit> StartCommit(const WriteBatch& batch, absl::Time now);
  // True when StartCommit returns before the commit is applied.
  virtual bool pipelines_commits() const { return false; }

  // Up to `limit` events with seq > after_seq, ascending.
  virtual absl::StatusOr<std::vector<EventPtr>> ReadAfter(uint64_t after_seq, size_t limit) = 0;
  virtual absl::StatusOr<EventPtr> ReadOne(uint64_t seq) = 0;
  // Newest first.
  virtual absl::StatusOr<std::vector<EventPtr>> Query(const HistoryQuery& query) = 0;
  // The first sequence whose event time is >= t, or last_seq + 1.
  virtual absl::StatusOr<uint64_t> FirstSequenceAtOrAfter(absl::Time t) = 0;
  // Events ingested at or after `since`, ascending (to rebuild the dedupe window).
  virtual absl::StatusOr<std::vector<EventPtr>> ReadIngestedSince(absl::Time since) = 0;
  virtual absl::StatusOr<StoreBounds> Bounds() = 0;

  virtual absl::StatusOr<std::vector<GroupRecord>> LoadGroups() = 0;
  virtual absl::StatusOr<std::vector<PendingRecord>> LoadPending(const std::string& group) = 0;
  virtual absl::StatusOr<std::vector<DeadLetterRecord>> ListDeadLetters(const std::string& group,
                                                                        uint64_t after_seq,
                                                                        size_t limit) = 0;
  virtual absl::StatusOr<uint64_t> CountDeadLetters(const std::string& group) = 0;

  // Deletes the oldest events beyond max_count or ingested before now - max_age,
  // at most `max_delete` per call. Returns how many were deleted.
  virtual absl::StatusOr<uint64_t> ApplyRetention(absl::Time now, absl::Duration max_age,
                                                  uint64_t max_count, uint64_t max_delete) = 0;
  virtual uint64_t StorageBytes() = 0;
  // A cheap probe that the store can be reached (readiness); called from
  // housekeeping about once a second.
  virtual absl::Status Check() { return absl::OkStatus(); }
  // Several broker processes may share this store: each must learn of the
  // others' appends from the store (WaitForAppends) rather than only from
  // its own commits.
  virtual bool shared() const { return false; }
  // Blocks until events after `after_seq` exist or `timeout` passed, then
  // returns up to `limit` of them (ascending; empty on timeout). Only shared
  // stores need it.
  virtual absl::StatusOr<std::vector<EventPtr>> WaitForAppends(uint64_t after_seq, size_t limit,
                                                               absl::Duration timeout) {
    return absl::UnimplementedError("WaitForAppends: the store is not shared");
  }
  // Shared stores: records this replica's load, valid for `ttl`, and lists
  // every replica's that is still valid (this one's included).
  virtual absl::Status PublishLoad(const ReplicaLoad& load, absl::Duration ttl) {
    return absl::OkStatus();
  }
  virtual absl::StatusOr<std::vector<ReplicaLoad>> ListLoads() {
    return std::vector<ReplicaLoad>();
  }

  // Consumer groups of a shared store, whose state (cursor, pending
  // deliveries with their leases, dead letters) only the store holds: each
  // replica claims deliveries for its own members. Others: Unimplemented.
  // Leases up to request.max deliveries: those due again first (deadline
  // passed, nack delay over; dead-lettered past max_deliveries), then new
  // matching events after the group's cursor.
  virtual absl::StatusOr<ClaimResult> Claim(const ClaimRequest& request, absl::Time now) {
    return Unshared("Claim");
  }
  // Removes acknowledged deliveries; returns how many were pending.
  virtual absl::StatusOr<uint32_t> AckDeliveries(const std::string& group,
                                                 const std::vector<uint64_t>& seqs) {
    return Unshared("AckDeliveries");
  }
  // Held deliveries become due again at `at`, for any replica (a nack) —
  // only while their attempt is still the current one: a late nack of an
  // attempt already redelivered changes nothing. `reason` is kept with each
  // until it is claimed again: the dead letter's last_error if that was its
  // last attempt (a delivery whose lease ran out has kReasonExpired). Unknown sequences are
  // INVALID_ARGUMENT naming ack_ids[i].
  virtual absl::StatusOr<uint32_t> Requeue(const std::string& group,
                                           const std::vector<DeliveryRef>& refs, absl::Time at,
                                           const std::string& reason) {
    return Unshared("Requeue");
  }
  // Dead letters become pending again, due at `at`.
  virtual absl::StatusOr<uint32_t> Revive(const std::string& group,
                                          const std::vector<uint64_t>& seqs, absl::Time at) {
    return Unshared("Revive");
  }
  // Deliveries `owner` still holds at the same attempt become due at `at`
  // (its member left), keeping `reason` as Requeue does; what another
  // replica claimed again is left alone.
  virtual absl::StatusOr<uint32_t> GiveBack(const std::string& group, const std::string& owner,
                                            const std::vector<DeliveryRef>& refs, absl::Time at,
                                            const std::string& reason) {
    return Unshared("GiveBack");
  }
  // A new lease end for deliveries still held at the same attempt.
  virtual absl::StatusOr<uint32_t> ExtendLeases(const std::string& group,
                                                const std::vector<DeliveryRef>& refs,
                                                absl::Time until) {
    return Unshared("ExtendLeases");
  }
  // Of `seqs`, those `owner` still holds with a lease ending after `now`.
  virtual absl::StatusOr<std::vector<uint64_t>> StillHeld(const std::string& group,
                                                          const std::string& owner,
                                                          const std::vector<uint64_t>& seqs,
                                                          absl::Time now) {
    return Unshared("StillHeld");
  }
  virtual absl::StatusOr<SharedGroupStats> GroupStats(const std::string& group) {
    return Unshared("GroupStats");
  }

 private:
  static absl::Status Unshared(absl::string_view what) {
    return absl::UnimplementedError(absl::StrCat(what, ": the store is not shared"));
  }
};

namespace internal {
class AppliedCommit : public PendingCommit {
 public:
  explicit AppliedCommit(absl::StatusOr<CommitResult> result) : result_(std::move(result)) {}
  absl::StatusOr<CommitResult> Wait() override { return std::move(result_); }

 private:
  absl::StatusOr<CommitResult> result_;
};
}  // namespace internal

inline std::unique_ptr<PendingCommit> EventStore::StartCommit(const WriteBatch& batch,
                                                              absl::Time now) {
  return std::make_unique<internal::AppliedCommit>(Commit(batch, now));
}

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_EVENT_STORE_H_
