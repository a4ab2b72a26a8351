#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_STORE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_STORE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/redis/redis_client.h"
#include "services/event_broker/event_store.h"

namespace switchboard::broker {

struct RedisStoreOptions {
  // Every key starts with "{prefix}:": one Cluster slot per deployment.
  std::string prefix = "switchboard";
  // 0: a write is acknowledged once the master applied it (--sync=normal).
  // N: also once WAIT saw N replicas have it (--sync=replicated).
  int min_replicas = 0;
  // How long one store call may take, retries on Cluster failover included.
  absl::Duration timeout = absl::Seconds(5);
  // Correlation-id and subject indexes outlive their newest event by this
  // (set it to the retention age).
  absl::Duration index_ttl = absl::Hours(24 * 7);
  // A client id published again within this window is a duplicate.
  absl::Duration dedupe_window = absl::Minutes(2);
};

// A group's name as it appears in Redis keys: '%' and ':' percent-encoded,
// so that no group's keys can be another's ("x:pending" vs "x").
std::string EncodeGroupName(absl::string_view name);
std::string DecodeGroupName(absl::string_view encoded);

// 32 random hex digits: the idempotency token of a commit or claim script.
std::string RandomToken();

// A log entry's packed value (redis_scripts.h): what history filters and
// readers need besides the type, in one field.
std::string PackEntry(int64_t ingest_us, const NewEvent& event);
// Ingest time and payload back from a packed value; false if malformed.
bool UnpackEntry(std::string packed, int64_t* ingest_us, std::string* payload);
// The events of an XRANGE/XREAD reply (entries [id, [field, value, ...]]).
absl::StatusOr<std::vector<EventPtr>> EventsFromEntries(absl::StatusOr<redis::Reply> r,
                                                        absl::string_view what);

// The layout version of the keys below {P}; see RedisEventStore::Check.
inline constexpr char kRedisFormat[] = "2";

// The log and group state in Redis: a stream with the sequence as entry id,
// secondary indexes for history, hashes and sorted sets for groups, every
// multi-key change one Lua script. See redis_scripts.h for the keys.
class RedisEventStore : public EventStore {
 public:
  RedisEventStore(std::unique_ptr<redis::RedisClient> client, RedisStoreOptions options);

  // PING; UNAVAILABLE while Redis cannot be reached. The first success also
  // checks the keys' layout version: FAILED_PRECONDITION for a log this
  // build cannot read.
  absl::Status Check() override;

  absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) override;
  // Sent on a connection kept for commits, the reply read by Wait(). A
  // commit whose reply cannot be read there (lost connection, redirect,
  // NOSCRIPT, or waited for out of order) is sent again through the
  // retrying path with the same token: applied once either way.
  std::unique_ptr<PendingCommit> StartCommit(const WriteBatch& batch, absl::Time now) override;
  bool pipelines_commits() const override { return true; }
  bool shared() const override { return true; }
  absl::StatusOr<std::vector<EventPtr>> WaitForAppends(uint64_t after_seq, size_t limit,
                                                       absl::Duration timeout) override;
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
  uint64_t StorageBytes() override;

 private:
  class Pipelined;

  std::string Key(absl::string_view suffix) const;
  absl::Time Deadline() const { return absl::Now() + options_.timeout; }
  // Runs a write followed by WAIT when min_replicas asks for it.
  absl::StatusOr<redis::Reply> Write(redis::Command command, absl::string_view what);
  // The write's reply, or its error, or WAIT's shortfall.
  absl::StatusOr<redis::Reply> WriteOutcome(std::vector<redis::Reply> replies,
                                            absl::string_view what) const;
  redis::Command WaitCommand() const;
  redis::Command CommitCommand(const WriteBatch& batch, absl::Time now) const;
  absl::StatusOr<CommitResult> FinishCommit(Pipelined& commit);
  // A group script taking prefix, group (encoded) and `args`. Group state
  // is not WAITed for: a change lost in a failover means a redelivery, never
  // a lost event.
  absl::StatusOr<redis::Reply> GroupWrite(const redis::Script& script, const std::string& group,
                                          std::vector<std::string> args, absl::string_view what);

  std::unique_ptr<redis::RedisClient> client_;
  const RedisStoreOptions options_;
  const std::string tag_;  // "{prefix}"
  const redis::Script commit_;
  const redis::Script first_at_;
  const redis::Script retention_;
  const redis::Script query_;
  const redis::Script claim_;
  const redis::Script ack_;
  const redis::Script requeue_;
  const redis::Script extend_;
  const redis::Script revive_;
  const redis::Script still_held_;
  std::atomic<uint64_t> loads_published_{0};
  // {P}:format was found (or set) to kRedisFormat.
  absl::Status CheckFormat();
  std::atomic<bool> format_checked_{false};

  // Per group, the cursor and stored filter this store's last claim saw,
  // and the log entries after that cursor it read then (read_ahead).
  struct ClaimView {
    uint64_t cursor = 0;
    std::string types;
    std::vector<EventPtr> ahead;
    bool read_ahead = false;
    size_t payload_size = 1024;  // average of the last read-ahead
  };
  // One claim: the reading way with `view`, else scanning in the script.
  // Empty when the group was not as `view` says (claim_views_ updated).
  absl::StatusOr<std::optional<ClaimResult>> ClaimOnce(const ClaimRequest& req, absl::Time now,
                                                       std::optional<ClaimView> view);
  absl::Mutex claim_mu_;
  absl::flat_hash_map<std::string, ClaimView> claim_views_ ABSL_GUARDED_BY(claim_mu_);

  // The connection pipelined commits travel on; replies are read in the
  // order sent (`received_` of `sent_`).
  absl::Mutex stream_mu_;
  std::unique_ptr<redis::Stream> stream_ ABSL_GUARDED_BY(stream_mu_);
  uint64_t stream_id_ ABSL_GUARDED_BY(stream_mu_) = 0;
  uint64_t sent_ ABSL_GUARDED_BY(stream_mu_) = 0;
  uint64_t received_ ABSL_GUARDED_BY(stream_mu_) = 0;
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_REDIS_STORE_H_
