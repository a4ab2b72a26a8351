#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_SQLITE_JOB_STORE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_SQLITE_JOB_STORE_H_

#include <sqlite3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/sqlite_util.h"
#include "libs/common/wal_checkpointer.h"
#include "services/job_worker/job_store.h"
#include "services/job_worker/local_slots.h"

namespace switchboard::jobs {

namespace internal {
struct PendingPut;
}  // namespace internal

// Jobs in SQLite (WAL) under --data_dir, for one worker. Concurrent PutMany
// calls share one transaction: whichever caller finds no commit running commits
// everything queued (group commit), the others wait for it. Each commit also
// drops up to 200 + 2 x rows records older than the retention.
class SqliteJobStore : public JobStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(
      const std::string& data_dir, absl::Duration retention = absl::Hours(24 * 7));
  ~SqliteJobStore() override;

  bool shared() const override { return false; }
  absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) override;
  absl::StatusOr<std::vector<std::optional<v1::Job>>> GetMany(
      const std::vector<std::string>& ids) override;
  absl::Status PutMany(const std::vector<v1::Job>& jobs) override;
  absl::StatusOr<std::vector<v1::Job>> List(const JobQuery& query) override;
  absl::StatusOr<uint64_t> NextCounter(const std::string& name) override;
  absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>> CountByQueueAndStatus() override;
  absl::StatusOr<std::map<std::string, uint64_t>> RetriedByQueue() override;
  absl::Status SetPaused(const std::string& queue, bool paused) override;
  absl::StatusOr<std::set<std::string>> PausedQueues() override;
  absl::StatusOr<bool> AcquireSlot(const std::string& queue, const std::string& holder,
                                   uint32_t limit, absl::Time now, absl::Duration lease) override {
    return slots_.Acquire(queue, holder, limit, now, lease);
  }
  absl::Status RenewSlots(const std::string& queue, const std::vector<std::string>& holders,
                          absl::Time now, absl::Duration lease) override {
    slots_.Renew(queue, holders, now, lease);
    return absl::OkStatus();
  }
  absl::Status ReleaseSlot(const std::string& queue, const std::string& holder) override {
    slots_.Release(queue, holder);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> SlotsHeld(const std::string& queue, absl::Time now) override {
    return slots_.Held(queue, now);
  }
  // One worker: there are no others.
  absl::Status ReportLoad(const std::string&, const std::map<std::string, QueueLoad>&, absl::Time,
                          absl::Duration) override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, QueueLoad>> OtherLoads(const std::string&,
                                                              absl::Time) override {
    return std::map<std::string, QueueLoad>();
  }

 private:
  SqliteJobStore(sqlite3* db, sqlite3* reader, absl::Duration retention);
  absl::Status CommitPuts(const std::vector<std::shared_ptr<internal::PendingPut>>& batch);

  const absl::Duration retention_;
  absl::Mutex mu_;  // the connection
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<sqlite::StmtCache> stmts_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<sqlite::WalCheckpointer> checkpointer_ ABSL_GUARDED_BY(mu_);
  // Reads on their own connection, so looking a job up never waits for a
  // commit in progress (WAL readers see the last committed state).
  void EndStaleReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);
  // One job's record, on the reader connection (Get, GetMany).
  absl::StatusOr<std::optional<v1::Job>> ReadLocked(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);
  absl::Mutex read_mu_;
  sqlite3* reader_ ABSL_GUARDED_BY(read_mu_);
  std::unique_ptr<sqlite::StmtCache> read_stmts_ ABSL_GUARDED_BY(read_mu_);

  absl::Mutex queue_mu_;
  std::vector<std::shared_ptr<internal::PendingPut>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool committing_ ABSL_GUARDED_BY(queue_mu_) = false;

  LocalSlots slots_;
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_SQLITE_JOB_STORE_H_
