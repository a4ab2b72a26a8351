// event-broker: wires flags, store, broker core, gRPC and admin HTTP.
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "libs/common/admin_http.h"
#include "libs/common/backoff.h"
#include "libs/common/flags.h"
#include "libs/common/grpc_server.h"
#include "libs/common/json_log.h"
#include "libs/common/service_edges.h"
#include "libs/common/shutdown.h"
#include "libs/common/sqlite_backup.h"
#include "libs/redis/redis_metrics.h"
#include "libs/security/tls_flags.h"
#include "prometheus/registry.h"
#include "services/console/console.h"
#include "services/event_broker/broker.h"
#include "services/event_broker/forwarding_store.h"
#include "services/event_broker/grpc_service.h"
#include "services/event_broker/http_api.h"
#include "services/event_broker/sse_stream.h"
#include "services/event_broker/store_factory.h"

ABSL_FLAG(std::string, grpc_addr, "0.0.0.0:50051", "gRPC listen address HOST:PORT (port 0: any)");
ABSL_FLAG(std::string, http_addr, "0.0.0.0:8081",
          "admin HTTP listen address HOST:PORT (/metrics, /healthz, /readyz, JSON API)");
ABSL_FLAG(std::string, store, "sqlite",
          "event store: 'sqlite' (embedded, under --data_dir), "
          "redis://[USER:PASSWORD@]HOST:PORT or redis-cluster://HOST:PORT[,HOST:PORT...] "
          "(env REDIS_URL)");
ABSL_FLAG(std::string, redis_prefix, "switchboard",
          "Redis keys are '{PREFIX}:...': one Cluster slot per deployment "
          "(env REDIS_EVENT_CHANNEL)");
ABSL_FLAG(std::string, redis_password_file, "",
          "file holding the Redis password (overrides the URL's)");
ABSL_FLAG(int32_t, redis_min_replicas, 1,
          "with --sync=replicated: replicas WAIT must confirm before a write is acknowledged");
ABSL_FLAG(absl::Duration, redis_timeout, absl::Seconds(5),
          "longest one Redis operation may take, Cluster failover retries included");
ABSL_FLAG(std::string, data_dir, "./data/event-broker", "directory of the embedded store");
ABSL_FLAG(std::string, sync, "normal",
          "durability of an ack. sqlite: 'normal' survives a process crash, 'full' also power "
          "loss (fsync before ack). redis: 'normal' once the master applied it (then Redis's "
          "appendfsync decides), 'replicated' once WAIT saw --redis_min_replicas replicas");
ABSL_FLAG(int64_t, max_event_bytes, 1 << 20, "largest accepted event, serialized");
ABSL_FLAG(int64_t, max_batch_events, 10000, "most events in one PublishBatch");
ABSL_FLAG(absl::Duration, dedupe_window, absl::Minutes(2),
          "a repeat of source+id within this window is a duplicate");
ABSL_FLAG(absl::Duration, retention_age, absl::Hours(24 * 7), "events older than this are deleted");
ABSL_FLAG(int64_t, retention_count, 10'000'000, "at most this many events are kept");
ABSL_FLAG(absl::Duration, ack_deadline, absl::Seconds(30), "default group ack deadline");
ABSL_FLAG(int32_t, max_in_flight, 1000, "default unacked deliveries per group subscriber");
ABSL_FLAG(int32_t, max_deliveries, 5, "default deliveries before an event is dead-lettered");
ABSL_FLAG(int64_t, cache_events, 16384, "recent events kept in memory for live subscribers");
ABSL_FLAG(int64_t, max_queued_publish_bytes, 256 << 20,
          "publishes waiting for a commit, in bytes; past it publishes are refused with "
          "RESOURCE_EXHAUSTED (HTTP 429) until the store catches up");
ABSL_FLAG(int32_t, sse_max_streams, 64,
          "Server-Sent Events streams (GET /api/events/stream) open at once; more get 503");
ABSL_FLAG(absl::Duration, sse_heartbeat, absl::Seconds(15),
          "a comment line on an idle event stream this often keeps proxies from closing it");
ABSL_FLAG(std::vector<std::string>, sse_allow_origins, {},
          "origins whose pages may read the event stream (CORS), e.g. "
          "https://shop.example.com; '*' for any; empty: the broker's own origin only");
ABSL_FLAG(int64_t, grpc_memory_quota_bytes, 1LL << 30,
          "memory gRPC may use for requests and responses in flight");
ABSL_FLAG(int64_t, event_history_size, 1000,
          "events GetEventHistory and /api/events/history return when no limit is given "
          "(env EVENT_HISTORY_SIZE)");
ABSL_FLAG(int64_t, event_emission_timeout, 5000,
          "ms a JSON-API publish may wait for its commit before DEADLINE_EXCEEDED "
          "(env EVENT_EMISSION_TIMEOUT)");
ABSL_FLAG(int64_t, test_store_bytes_per_sec, 0,
          "for overload tests only: the store appends no faster than this (0: off)");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(1),
          "on SIGTERM, after the broker drained (accepted publishes committed, streams "
          "ended), how long other in-flight calls may take before they are cancelled");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error");

namespace switchboard::broker {
namespace {

absl::Status ValidateFlags() {
  if (absl::GetFlag(FLAGS_max_event_bytes) < 256 ||
      absl::GetFlag(FLAGS_max_event_bytes) > (32 << 20)) {
    return absl::InvalidArgumentError("max_event_bytes: must be between 256 and 33554432");
  }
  if (absl::GetFlag(FLAGS_max_batch_events) < 1) {
    return absl::InvalidArgumentError("max_batch_events: must be >= 1");
  }
  if (absl::GetFlag(FLAGS_event_history_size) < 1 ||
      absl::GetFlag(FLAGS_event_history_size) > 10000) {
    return absl::InvalidArgumentError("event_history_size: must be between 1 and 10000");
  }
  if (absl::GetFlag(FLAGS_event_emission_timeout) < 1) {
    return absl::InvalidArgumentError("event_emission_timeout: must be >= 1 (ms)");
  }
  if (absl::GetFlag(FLAGS_retention_count) < 1) {
    return absl::InvalidArgumentError("retention_count: must be >= 1");
  }
  if (absl::GetFlag(FLAGS_retention_age) <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retention_age: must be > 0");
  }
  if (absl::GetFlag(FLAGS_dedupe_window) < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("dedupe_window: must be >= 0");
  }
  if (absl::GetFlag(FLAGS_sse_max_streams) < 1 || absl::GetFlag(FLAGS_sse_max_streams) > 1000) {
    return absl::InvalidArgumentError("sse_max_streams: must be between 1 and 1000");
  }
  if (absl::GetFlag(FLAGS_sse_heartbeat) < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("sse_heartbeat: must be at least 100ms");
  }
  if (absl::GetFlag(FLAGS_max_in_flight) < 1 || absl::GetFlag(FLAGS_max_deliveries) < 1) {
    return absl::InvalidArgumentError("max_in_flight, max_deliveries: must be >= 1");
  }
  return absl::OkStatus();
}

int Run() {
  if (absl::Status s = ValidateFlags(); !s.ok()) {
    LogError("bad flag", {{"error", std::string(s.message())}});
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  // Before the edges: their threads call the authenticator until they stop.
  AuthMetrics auth_metrics(*registry, "broker");
  absl::StatusOr<EdgeSecurity> security =
      ReadEdgeSecurityFlags(&auth_metrics, /*mesh_client=*/false);
  if (!security.ok()) {
    LogError("bad flag", {{"error", std::string(security.status().message())}});
    return 2;
  }
  absl::StatusOr<console::ConsoleConfig> console_config = console::ReadConsoleFlags();
  if (!console_config.ok()) {
    LogError("bad flag", {{"error", std::string(console_config.status().message())}});
    return 2;
  }
  ServiceEdges edges(registry, "broker");
  security->ApplyTo(&edges);
  BrokerMetrics metrics(*registry);
  redis::RedisMetrics redis_metrics(*registry, "broker");
  StoreSettings settings;
  settings.store = absl::GetFlag(FLAGS_store);
  settings.data_dir = absl::GetFlag(FLAGS_data_dir);
  settings.sync = absl::GetFlag(FLAGS_sync);
  settings.redis_prefix = absl::GetFlag(FLAGS_redis_prefix);
  settings.redis_password_file = absl::GetFlag(FLAGS_redis_password_file);
  settings.redis_min_replicas = absl::GetFlag(FLAGS_redis_min_replicas);
  settings.redis_timeout = absl::GetFlag(FLAGS_redis_timeout);
  settings.retention_age = absl::GetFlag(FLAGS_retention_age);
  settings.dedupe.window = absl::GetFlag(FLAGS_dedupe_window);
  std::string store_description;
  absl::StatusOr<std::unique_ptr<EventStore>> store =
      OpenEventStore(settings, &redis_metrics, &store_description);
  if (!store.ok()) {
    LogError(absl::IsInvalidArgument(store.status()) ? "bad flag" : "cannot open store",
             {{"error", std::string(store.status().message())}});
    return absl::IsInvalidArgument(store.status()) ? 2 : 1;
  }
  BrokerConfig config;
  config.max_event_bytes = absl::GetFlag(FLAGS_max_event_bytes);
  config.max_batch_events = absl::GetFlag(FLAGS_max_batch_events);
  config.retention_age = absl::GetFlag(FLAGS_retention_age);
  config.retention_count = absl::GetFlag(FLAGS_retention_count);
  config.default_ack_deadline = absl::GetFlag(FLAGS_ack_deadline);
  config.default_max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  config.default_max_deliveries = absl::GetFlag(FLAGS_max_deliveries);
  config.cache_events = absl::GetFlag(FLAGS_cache_events);
  config.max_queued_publish_bytes = absl::GetFlag(FLAGS_max_queued_publish_bytes);
  config.default_history_limit = static_cast<uint32_t>(absl::GetFlag(FLAGS_event_history_size));
  config.emission_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_event_emission_timeout));
  {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    config.replica_id = absl::StrCat(host, "-", getpid());
  }
  std::unique_ptr<EventStore> event_store = *std::move(store);
  if (int64_t rate = absl::GetFlag(FLAGS_test_store_bytes_per_sec); rate > 0) {
    LogWarn("store throttled for a test", {{"bytes_per_sec", rate}});
    event_store = std::make_unique<ThrottledEventStore>(std::move(event_store), rate);
  }
  // The broker needs its store to recover. A store that cannot be reached
  // yet (Redis still starting) is waited for with the edges already up,
  // answering UNAVAILABLE and NOT_SERVING; SIGTERM ends the wait.
  BrokerSlot slot;
  std::unique_ptr<Broker> broker;
  // 0: broker created; 1: not yet (retry); 2: never (bad credentials).
  auto try_create = [&]() -> int {
    if (event_store == nullptr) {  // a failed Broker::Create consumed it
      absl::StatusOr<std::unique_ptr<EventStore>> again =
          OpenEventStore(settings, &redis_metrics, &store_description);
      if (!again.ok()) return 1;
      event_store = *std::move(again);
    }
    absl::Status reachable = event_store->Check();
    if (absl::IsUnauthenticated(reachable) || absl::IsFailedPrecondition(reachable)) {
      LogError("bad flag", {{"error", absl::StrCat("store: ", reachable.message())}});
      return 2;
    }
    absl::StatusOr<std::unique_ptr<Broker>> created =
        reachable.ok() ? Broker::Create(config, std::move(event_store), RealClock::Get(), &metrics)
                       : absl::StatusOr<std::unique_ptr<Broker>>(reachable);
    if (!created.ok()) {
      LogWarn("store not reachable yet", {{"error", std::string(created.status().message())}});
      return 1;
    }
    broker = *std::move(created);
    slot.set(broker.get());
    return 0;
  };
  if (try_create() == 2) return 2;

  EventBrokerService service(&slot, security->auth.get());
  edges.set_grpc_memory_quota(absl::GetFlag(FLAGS_grpc_memory_quota_bytes));
  RegisterBrokerHttpApi(&edges.http(), &slot, security->auth.get());
  SseMetrics sse_metrics(*registry);
  SseConfig sse;
  sse.max_streams = absl::GetFlag(FLAGS_sse_max_streams);
  sse.heartbeat = absl::GetFlag(FLAGS_sse_heartbeat);
  sse.allow_origins = absl::GetFlag(FLAGS_sse_allow_origins);
  RegisterEventStream(&edges.http(), &slot, security->auth.get(), sse, &sse_metrics);
  console::Console console(*std::move(console_config));
  console.Register(&edges.http());
  if (settings.store == "sqlite") {
    sqlite::AddBackupRoute(&edges.http(), settings.data_dir, {"events.db"});
  }
  if (absl::Status st =
          edges.Start(absl::GetFlag(FLAGS_grpc_addr), absl::GetFlag(FLAGS_http_addr), {&service},
                      [&slot] {
                        Broker* b = slot.get();
                        return b != nullptr && b->store_reachable();
                      },
                      {{"store", store_description}, {"sync", absl::GetFlag(FLAGS_sync)}});
      !st.ok()) {
    LogError("cannot start", {{"error", st.ToString()}});
    // Whatever did start calls into the console and the stream until stopped.
    edges.Stop(absl::ZeroDuration());
    return 1;
  }
  console.SetBrokerChannel(edges.InProcessChannel());
  Backoff backoff(BackoffPolicy{absl::Milliseconds(200), 2.0, absl::Seconds(5), 0.2});
  int exit_code = 0;
  while (true) {
    edges.SetServing(broker != nullptr && broker->store_reachable());
    if (WaitForShutdownSignalFor(broker != nullptr ? absl::Seconds(1) : backoff.Next())) break;
    if (broker == nullptr) {
      if (int r = try_create(); r == 2) {
        exit_code = 2;
        break;
      }
    }
  }
  LogInfo("shutting down");
  edges.BeginShutdown();
  // Ends streams (clients reconnect elsewhere) and commits accepted publishes.
  absl::Time t0 = absl::Now();
  if (broker != nullptr) broker->Shutdown();
  absl::Time t1 = absl::Now();
  edges.Stop(absl::GetFlag(FLAGS_shutdown_grace));
  LogInfo("stopped", {{"broker_ms", absl::ToInt64Milliseconds(t1 - t0)},
                      {"edges_ms", absl::ToInt64Milliseconds(absl::Now() - t1)}});
  return exit_code;
}

}  // namespace
}  // namespace switchboard::broker

int main(int argc, char** argv) {
  switchboard::InitService(argc, argv, "event-broker",
                           "durable gRPC publish/subscribe with consumer groups.\n"
                           "Usage: event-broker [--grpc_addr=0.0.0.0:50051] [--data_dir=DIR] ...",
                           {{"EVENT_HISTORY_SIZE", "event_history_size"},
                            {"EVENT_EMISSION_TIMEOUT", "event_emission_timeout"},
                            {"REDIS_URL", "store"},
                            {"REDIS_EVENT_CHANNEL", "redis_prefix"}});
  return switchboard::broker::Run();
}
