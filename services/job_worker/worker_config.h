#ifndef SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_CONFIG_H_
#define SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/common/backoff.h"
#include "switchboard/jobs/v1/jobs.pb.h"

namespace switchboard::jobs {

struct QueueSettings {
  std::string name;
  uint32_t concurrency = 10;
  uint32_t global_concurrency = 0;  // over all workers; 0 = no cap
  uint32_t attempts = 3;
  BackoffPolicy backoff;
  absl::Duration timeout = absl::Seconds(30);
};

struct JobRoute {
  std::string event_type;
  std::string job_type;
  std::string queue;
  int priority = 0;
};

// The configuration the worker runs with: defaults merged with the file.
struct ResolvedConfig {
  std::vector<JobRoute> routes;                 // one per event type
  std::map<std::string, QueueSettings> queues;  // every queue a route names
  v1::PaymentRule payment_rule;

  const JobRoute* Find(const std::string& event_type) const;
  std::vector<std::string> EventTypes() const;
};

// The mappings of SPEC §4.
std::vector<v1::JobMapping> DefaultMappings();

// Reads a WorkerConfig from JSON (.json, or content starting with '{') or
// protobuf text format. Unknown keys and bad values are errors naming them.
absl::StatusOr<v1::WorkerConfig> ParseWorkerConfig(const std::string& content,
                                                   const std::string& filename);
absl::StatusOr<v1::WorkerConfig> LoadWorkerConfigFile(const std::string& path);

// Validates `config` (errors name the field, e.g. "queues[1].concurrency")
// and merges it with the defaults. `job_types` are the registered handlers.
absl::StatusOr<ResolvedConfig> ResolveWorkerConfig(const v1::WorkerConfig& config,
                                                   const std::vector<std::string>& job_types);

}  // namespace switchboard::jobs

#endif  // SWITCHBOARD_SERVICES_JOB_WORKER_WORKER_CONFIG_H_
