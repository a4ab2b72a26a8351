#ifndef SWITCHBOARD_SERVICES_EVENT_BROKER_SQLITE_STORE_H_
#define SWITCHBOARD_SERVICES_EVENT_BROKER_SQLITE_STORE_H_

#include <sqlite3.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/wal_checkpointer.h"
#include "services/event_broker/dedupe_window.h"
#include "services/event_broker/event_store.h"

namespace switchboard::sqlite {
class StmtCache;
}  // namespace switchboard::sqlite

namespace switchboard::broker {

enum class SyncPolicy {
  kNormal,  // survives a process crash (WAL written before ack)
  kFull,    // survives power loss (WAL fsynced before ack)
};

absl::StatusOr<SyncPolicy> ParseSyncPolicy(absl::string_view s);

// The embedded store: one SQLite database in WAL mode under --data_dir.
// Commits come from one writer at a time (the broker batches publishes into
// them); reads use their own connection so they never wait for a commit.
class SqliteEventStore : public EventStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteEventStore>> Open(
      const std::string& data_dir, SyncPolicy sync, DedupeOptions dedupe = {},
      ::switchboard::sqlite::WalCheckpointer::Options checkpoints = {});
  ~SqliteEventStore() override;

  absl::StatusOr<CommitResult> Commit(const WriteBatch& batch, absl::Time now) override;
  // With --sync=normal only, when the store's lock is free (retention is not
  // running), no other connection holds the write lock, and the commit will
  // not fsync (the WAL is not due to start over, nor near its inline
  // checkpoint: WalCheckpointer::NextCommitMaySync).
  std::optional<absl::StatusOr<CommitResult>> TryCommitNow(const WriteBatch& batch,
                                                           absl::Time now) override;
  bool commits_now() const override { return sync_ == SyncPolicy::kNormal; }
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
  SqliteEventStore(std::string path, sqlite3* writer, sqlite3* reader, DedupeOptions dedupe);
  // Rebuilds the dedupe window from the events ingested in the window before
  // the newest one.
  absl::Status LoadDedupeWindow();
  absl::Status Init(SyncPolicy sync);
  // `begun`: the caller began the transaction.
  absl::StatusOr<CommitResult> CommitLocked(const WriteBatch& batch, absl::Time now, bool begun)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status ApplyOp(const GroupOp& op, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const std::string path_;
  SyncPolicy sync_ = SyncPolicy::kNormal;  // set by Init, before other threads
  absl::Mutex write_mu_;
  sqlite3* writer_ ABSL_GUARDED_BY(write_mu_);
  std::unique_ptr<::switchboard::sqlite::StmtCache> write_cache_ ABSL_GUARDED_BY(write_mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(write_mu_) = 0;
  DedupeWindow dedupe_ ABSL_GUARDED_BY(write_mu_);
  absl::Mutex read_mu_;
  sqlite3* reader_ ABSL_GUARDED_BY(read_mu_);
  std::unique_ptr<::switchboard::sqlite::StmtCache> read_cache_ ABSL_GUARDED_BY(read_mu_);
  // WAL checkpoints on a connection and thread of their own: the commit path
  // never waits for the fsync of the database file.
  std::unique_ptr<::switchboard::sqlite::WalCheckpointer> checkpointer_;
  // Mirrors last_seq_ for readers, who must not wait for a commit.
  std::atomic<uint64_t> published_last_seq_{0};
};

}  // namespace switchboard::broker

#endif  // SWITCHBOARD_SERVICES_EVENT_BROKER_SQLITE_STORE_H_
