#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_REDIS_JOB_STORE_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_REDIS_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "libs/redis/redis_client.h"
#include "services/job_worker/job_store.h"

namespace switchboard::jobs {

struct RedisJobStoreOptions {
  std::string prefix = "switchboard";  // keys carry the hash tag "{prefix}"
  absl::Duration timeout = absl::Seconds(5);
  absl::Duration retention = absl::Hours(24 * 7);
  // Replicas that must have a job record or a pause before it counts as
  // written (WAIT; a completion is recorded before its event is acked); 0:
  // the master's word.
  int min_replicas = 0;
};

// Job records, counters, paused queues, global-concurrency slots and live
// loads in Redis, shared by every worker of a deployment (standalone or
// Cluster: one hash tag, one slot). Keys and scripts: redis_job_scripts.h.
class RedisJobStore : public JobStore {
 public:
  RedisJobStore(std::unique_ptr<redis::RedisClient> client, RedisJobStoreOptions options);

  // One round trip: UNAUTHENTICATED when Redis wants credentials this store
  // lacks (or refuses them), UNAVAILABLE when it cannot be reached.
  absl::Status Check();

  bool shared() const override { return true; }
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
                                   uint32_t limit, absl::Time now, absl::Duration lease) override;
  absl::Status RenewSlots(const std::string& queue, const std::vector<std::string>& holders,
                          absl::Time now, absl::Duration lease) override;
  absl::Status ReleaseSlot(const std::string& queue, const std::string& holder) override;
  absl::StatusOr<uint64_t> SlotsHeld(const std::string& queue, absl::Time now) override;
  absl::Status ReportLoad(const std::string& worker_id,
                          const std::map<std::string, QueueLoad>& load, absl::Time now,
                          absl::Duration ttl) override;
  absl::StatusOr<std::map<std::string, QueueLoad>> OtherLoads(const std::string& worker_id,
                                                              absl::Time now) override;

 private:
  std::string Key(absl::string_view name) const;
  absl::Time Deadline() const { return absl::Now() + options_.timeout; }
  absl::StatusOr<redis::Reply> Run(redis::Command command, absl::string_view what,
                                   bool replicated = false);

  const std::unique_ptr<redis::RedisClient> client_;
  const RedisJobStoreOptions options_;
  const std::string tag_;
  const redis::Script put_, list_, acquire_, renew_, loads_;
};

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_REDIS_JOB_STORE_H_
