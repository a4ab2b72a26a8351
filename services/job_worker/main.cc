// job-worker: wires flags, config, store, broker client, worker core, gRPC and
// admin HTTP.
#include <unistd.h>

#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "libs/broker_client/broker_client.h"
#include "libs/common/admin_http.h"
#include "libs/common/flags.h"
#include "libs/common/grpc_server.h"
#include "libs/common/json_log.h"
#include "libs/common/service_edges.h"
#include "libs/common/shutdown.h"
#include "libs/common/sqlite_backup.h"
#include "libs/redis/redis_config.h"
#include "libs/redis/redis_metrics.h"
#include "libs/redis/store_flags.h"
#include "libs/security/tls_flags.h"
#include "prometheus/registry.h"
#include "services/job_worker/grpc_service.h"
#include "services/job_worker/handlers.h"
#include "services/job_worker/redis_job_store.h"
#include "services/job_worker/sqlite_job_store.h"
#include "services/job_worker/worker.h"
#include "services/job_worker/worker_config.h"

ABSL_FLAG(std::string, grpc_addr, "0.0.0.0:50052", "gRPC listen address HOST:PORT (port 0: any)");
ABSL_FLAG(std::string, http_addr, "0.0.0.0:8082",
          "admin HTTP listen address HOST:PORT (/metrics, /healthz, /readyz)");
ABSL_FLAG(std::string, broker, "127.0.0.1:50051", "event-broker gRPC address HOST:PORT");
ABSL_FLAG(std::string, config, "",
          "worker configuration (WorkerConfig as JSON or text format); empty: the order flow "
          "defaults");
ABSL_FLAG(std::string, data_dir, "./data/job-worker", "directory of the worker's job store");
ABSL_FLAG(absl::Duration, job_retention, absl::Hours(24 * 7),
          "job records not updated for this long are dropped");
ABSL_FLAG(std::string, worker_id, "", "this worker's id in job events (default: host-pid)");
ABSL_FLAG(std::string, start, "latest",
          "where a new job-worker consumer group starts: latest or earliest");
ABSL_FLAG(absl::Duration, ack_deadline, absl::Seconds(30),
          "ack deadline asked of the broker; extended while a job runs");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(20),
          "on SIGTERM, how long running jobs may take to finish");
ABSL_FLAG(int64_t, event_emission_timeout, 30000,
          "ms the worker's own publishes (job results, job.* events) may take before they fail "
          "(env EVENT_EMISSION_TIMEOUT; a failed result publish re-runs the job later)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error");

namespace switchboard::jobs {
namespace {

// The store --store names: configuration mistakes are INVALID_ARGUMENT
// naming the flag; a Redis store is made without contacting Redis.
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(redis::RedisMetrics* redis_metrics) {
  const absl::Duration retention = absl::GetFlag(FLAGS_job_retention);
  if (retention < absl::Minutes(1)) {
    return absl::InvalidArgumentError("job_retention: at least 1m");
  }
  absl::StatusOr<redis::SharedStoreFlags> shared = redis::ReadSharedStoreFlags();
  if (!shared.ok()) return shared.status();
  const redis::SharedStoreFlags& flags = *shared;
  if (flags.embedded) {
    absl::StatusOr<std::unique_ptr<SqliteJobStore>> s =
        SqliteJobStore::Open(absl::GetFlag(FLAGS_data_dir), retention);
    if (!s.ok()) return s.status();
    LogInfo("job store", {{"store", absl::StrCat("sqlite:", absl::GetFlag(FLAGS_data_dir))}});
    return std::unique_ptr<JobStore>(*std::move(s));
  }
  RedisJobStoreOptions opts;
  opts.prefix = flags.prefix;
  opts.timeout = flags.timeout;
  opts.min_replicas = flags.min_replicas;
  opts.retention = retention;
  LogInfo("job store",
          {{"store", absl::StrCat(flags.config.Redacted(), " prefix={", opts.prefix, "}")}});
  auto redis_store =
      std::make_unique<RedisJobStore>(redis::NewRedisClient(flags.config, redis_metrics), opts);
  // Wrong credentials are a configuration mistake; an unreachable Redis may
  // come later (meanwhile jobs wait and their events are nacked).
  absl::Status reach = redis_store->Check();
  if (absl::IsUnauthenticated(reach) || absl::IsFailedPrecondition(reach)) {
    return absl::InvalidArgumentError(absl::StrCat("store: ", reach.message()));
  }
  if (!reach.ok()) LogWarn("job store not reachable yet", {{"error", reach.ToString()}});
  return std::unique_ptr<JobStore>(std::move(redis_store));
}

int Run() {
  HandlerRegistry handlers;
  RegisterBuiltinHandlers(&handlers);
  v1::WorkerConfig file_config;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::StatusOr<v1::WorkerConfig> loaded = LoadWorkerConfigFile(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) {
      LogError("bad config", {{"error", std::string(loaded.status().message())}});
      return 2;
    }
    file_config = *std::move(loaded);
  }
  absl::StatusOr<ResolvedConfig> config = ResolveWorkerConfig(file_config, handlers.Types());
  if (!config.ok()) {
    LogError("bad config", {{"error", std::string(config.status().message())}});
    return 2;
  }
  WorkerOptions options;
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  if (options.worker_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    options.worker_id = absl::StrCat(host, "-", getpid());
  }
  options.ack_deadline = absl::GetFlag(FLAGS_ack_deadline);
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  options.publish_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_event_emission_timeout));
  if (options.publish_timeout < absl::Milliseconds(1)) {
    LogError("bad flag", {{"error", "event_emission_timeout: must be >= 1 (ms)"}});
    return 2;
  }
  if (absl::GetFlag(FLAGS_start) == "earliest") {
    options.start = broker::v1::SubscribeRequest::EARLIEST;
  } else if (absl::GetFlag(FLAGS_start) != "latest") {
    LogError("bad flag", {{"error", "start: must be latest or earliest"}});
    return 2;
  }
  if (options.ack_deadline < absl::Seconds(1)) {
    LogError("bad flag", {{"error", "ack_deadline: at least 1s"}});
    return 2;
  }

  auto registry = std::make_shared<prometheus::Registry>();
  // Before the edges: their threads call the authenticator until they stop.
  AuthMetrics auth_metrics(*registry, "worker");
  absl::StatusOr<EdgeSecurity> security =
      ReadEdgeSecurityFlags(&auth_metrics, /*mesh_client=*/true);
  if (!security.ok()) {
    LogError("bad flag", {{"error", std::string(security.status().message())}});
    return 2;
  }
  ServiceEdges edges(registry, "worker");
  security->ApplyTo(&edges);
  WorkerMetrics metrics(*registry);
  redis::RedisMetrics redis_metrics(*registry, "worker");
  absl::StatusOr<std::unique_ptr<JobStore>> store = OpenJobStore(&redis_metrics);
  if (!store.ok()) {
    bool bad_flag = absl::IsInvalidArgument(store.status());
    LogError(bad_flag ? "bad flag" : "cannot open job store",
             {{"error", std::string(store.status().message())}});
    return bad_flag ? 2 : 1;
  }
  GrpcBrokerClientOptions broker_options;
  broker_options.target = absl::GetFlag(FLAGS_broker);
  broker_options.tls = security->broker_tls;
  broker_options.bearer_token = security->broker_token;
  std::unique_ptr<BrokerClient> broker = NewGrpcBrokerClient(broker_options);
  Worker worker(options, *std::move(config), &handlers, store->get(), broker.get(),
                RealClock::Get(), &metrics);
  if (absl::Status s = worker.Start(); !s.ok()) {
    LogError("cannot start worker", {{"error", s.ToString()}});
    return 1;
  }
  JobWorkerService service(&worker, security->auth.get());
  if (dynamic_cast<SqliteJobStore*>(store->get()) != nullptr) {
    sqlite::AddBackupRoute(&edges.http(), absl::GetFlag(FLAGS_data_dir), {"jobs.db"});
  }
  if (absl::Status st =
          edges.Start(absl::GetFlag(FLAGS_grpc_addr), absl::GetFlag(FLAGS_http_addr), {&service},
                      [&worker] { return worker.ready(); },
                      {{"broker", absl::GetFlag(FLAGS_broker)}, {"worker_id", options.worker_id}});
      !st.ok()) {
    LogError("cannot start", {{"error", st.ToString()}});
    return 1;
  }

  int sig = WaitForShutdownSignal();
  LogInfo("shutting down", {{"signal", sig}});
  edges.BeginShutdown();
  bool drained = worker.Shutdown();
  edges.Stop(absl::Seconds(1));
  LogInfo("stopped", {{"drained", drained}});
  return 0;
}

}  // namespace
}  // namespace switchboard::jobs

int main(int argc, char** argv) {
  switchboard::InitService(argc, argv, "job-worker",
                           "runs the jobs that events trigger and reports their lifecycle.\n"
                           "Usage: job-worker [--broker=HOST:PORT] [--config=FILE] ...",
                           {{"EVENT_EMISSION_TIMEOUT", "event_emission_timeout"},
                            {"REDIS_URL", "store"},
                            {"REDIS_EVENT_CHANNEL", "redis_prefix"}});
  return switchboard::jobs::Run();
}
