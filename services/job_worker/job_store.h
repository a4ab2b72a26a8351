#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_JOB_STORE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_JOB_STORE_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "switchboard/jobs/v1/jobs.pb.h"

namespace switchboard::jobs {

struct JobQuery {
  std::string queue;
  v1::JobStatus status = v1::JOB_STATUS_UNSPECIFIED;
  std::string correlation_id;
  size_t limit = 100;
};

// What one worker holds of a queue right now, reported to the others.
struct QueueLoad {
  uint64_t waiting = 0;
  uint64_t active = 0;
  uint64_t processed = 0;  // since that worker started
  double processing_ms_total = 0;
};

// The worker's durable state: job records (what completed, so a redelivered
// event is not run again; attempts of failing jobs), counters, paused
// queues, and the slots of queues with a global concurrency. Embedded
// (SQLite, one worker) or shared by every worker of a deployment (Redis):
// the conformance suite (job_store_conformance_test.cc) holds both, and the
// in-memory fake, to one contract.
class JobStore {
 public:
  virtual ~JobStore() = default;

  // Whether several workers share this store (stats, pause and slots then
  // span all of them).
  virtual bool shared() const = 0;

  virtual absl::StatusOr<std::optional<v1::Job>> Get(const std::string& id) = 0;
  // One record per id, in order, read together (one round trip, one read
  // transaction). The default calls Get for each.
  virtual absl::StatusOr<std::vector<std::optional<v1::Job>>> GetMany(
      const std::vector<std::string>& ids);
  // Records the jobs (each replacing its earlier record) in one write: one
  // SQLite transaction, one Redis script. An error means the caller cannot
  // rely on any of them being recorded (on Redis some or all may be: a script
  // that fails partway, or too few replicas acknowledging in time). Records
  // not updated for the
  // store's retention are dropped.
  virtual absl::Status PutMany(const std::vector<v1::Job>& jobs) = 0;
  absl::Status Put(const v1::Job& job) { return PutMany({job}); }
  // Newest update first.
  virtual absl::StatusOr<std::vector<v1::Job>> List(const JobQuery& query) = 0;
  virtual absl::StatusOr<uint64_t> NextCounter(const std::string& name) = 0;
  // Jobs per (queue, status) among the records kept.
  virtual absl::StatusOr<std::map<std::pair<std::string, int>, uint64_t>>
  CountByQueueAndStatus() = 0;
  // Retries scheduled per queue, ever (Put with RETRY_SCHEDULED).
  virtual absl::StatusOr<std::map<std::string, uint64_t>> RetriedByQueue() = 0;

  // Paused queues, for every worker sharing the store; kept across restarts.
  virtual absl::Status SetPaused(const std::string& queue, bool paused) = 0;
  virtual absl::StatusOr<std::set<std::string>> PausedQueues() = 0;

  // Global concurrency: at most `limit` holders of `queue`'s slots at once
  // among all workers. A slot lasts until `now + lease` unless renewed, so a
  // worker that dies frees its slots when their leases end. Acquiring a
  // slot the holder already has renews it.
  virtual absl::StatusOr<bool> AcquireSlot(const std::string& queue, const std::string& holder,
                                           uint32_t limit, absl::Time now,
                                           absl::Duration lease) = 0;
  virtual absl::Status RenewSlots(const std::string& queue, const std::vector<std::string>& holders,
                                  absl::Time now, absl::Duration lease) = 0;
  virtual absl::Status ReleaseSlot(const std::string& queue, const std::string& holder) = 0;
  // Slots of `queue` held now (leases not yet ended).
  virtual absl::StatusOr<uint64_t> SlotsHeld(const std::string& queue, absl::Time now) = 0;

  // Live load: each worker reports what it holds; OtherLoads sums the
  // reports of the other workers that are younger than `ttl` at `now`.
  virtual absl::Status ReportLoad(const std::string& worker_id,
                                  const std::map<std::string, QueueLoad>& load, absl::Time now,
                                  absl::Duration ttl) = 0;
  virtual absl::StatusOr<std::map<std::string, QueueLoad>> OtherLoads(const std::string& worker_id,
                                                                      absl::Time now) = 0;
};

inline absl::StatusOr<std::vector<std::optional<v1::Job>>> JobStore::GetMany(
    const std::vector<std::string>& ids) {
  std::vector<std::optional<v1::Job>> out;
  out.reserve(ids.size());
  for (const std::string& id : ids) {
    absl::StatusOr<std::optional<v1::Job>> job = Get(id);
    if (!job.ok()) return job.status();
    out.push_back(*std::move(job));
  }
  return out;
}

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_JOB_STORE_H_
