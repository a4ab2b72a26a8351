#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_JOB_STORE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_JOB_STORE_H_

#include <sqlite3.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "libs/common/sqlite_util.h"
#include "switchboard/jobs/v1/jobs.pb.h"

namespace switchboard::jobs {

struct JobQuery {
  std::string queue;
  v1::JobStatus status = v1::JOB_STATUS_UNSPECIFIED;
  std::string correlation_id;
  size_t limit = 100;
};

// The worker's own durable record of jobs: what completed (so a redelivered
// event is not run again), attempts of failing jobs, and counters.
class JobStore {
 public:
  virtual ~JobStore() = default;
  virtual absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) = 0;
  virtual absl::Status Put(const v1::Job& job) = 0;
  // Newest first.
  virtual absl::StatusOr<std::vector<v1::Job>> List(const JobQuery& query) = 0;
  virtual absl::StatusOr<uint64_t> NextCounter(const std::string& name) = 0;
  // Jobs per (queue, status), for stats after a restart.
  virtual absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>>
  CountByQueueAndStatus() = 0;
};

namespace internal {
struct PendingPut;
}  // namespace internal

// Jobs in SQLite (WAL) under --data_dir. Concurrent Puts share one
// transaction: whichever caller finds no commit running commits everything
// queued (group commit), the others wait for it.
class SqliteJobStore : public JobStore {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& data_dir);
  ~SqliteJobStore() override;

  absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) override;
  absl::Status Put(const v1::Job& job) override;
  absl::StatusOr<std::vector<v1::Job>> List(const JobQuery& query) override;
  absl::StatusOr<uint64_t> NextCounter(const std::string& name) override;
  absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>> CountByQueueAndStatus() override;

 private:
  SqliteJobStore(sqlite3* db, sqlite3* reader);
  absl::Status CommitPuts(const std::vector<std::shared_ptr<internal::PendingPut>>& batch);

  absl::Mutex mu_;  // the connection
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<sqlite::StmtCache> stmts_ ABSL_GUARDED_BY(mu_);
  // Reads on their own connection, so looking a job up never waits for a
  // commit in progress (WAL readers see the last committed state).
  absl::Mutex read_mu_;
  sqlite3* reader_ ABSL_GUARDED_BY(read_mu_);
  std::unique_ptr<sqlite::StmtCache> read_stmts_ ABSL_GUARDED_BY(read_mu_);

  absl::Mutex queue_mu_;
  std::vector<std::shared_ptr<internal::PendingPut>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool committing_ ABSL_GUARDED_BY(queue_mu_) = false;
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_JOB_STORE_H_
