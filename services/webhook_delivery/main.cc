// webhook-delivery: wires flags, stores, registry, sender, engine, broker
// client, gRPC and admin HTTP.
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
#include "libs/security/secret_box.h"
#include "libs/security/tls_flags.h"
#include "prometheus/registry.h"
#include "services/webhook_delivery/delivery_engine.h"
#include "services/webhook_delivery/delivery_store.h"
#include "services/webhook_delivery/grpc_service.h"
#include "services/webhook_delivery/http_api.h"
#include "services/webhook_delivery/http_sender.h"
#include "services/webhook_delivery/redis_webhook_store.h"
#include "services/webhook_delivery/registry.h"
#include "services/webhook_delivery/sealed_webhook_store.h"
#include "services/webhook_delivery/webhook_core.h"
#include "services/webhook_delivery/webhook_store.h"

ABSL_FLAG(std::string, grpc_addr, "0.0.0.0:50053", "gRPC listen address HOST:PORT (port 0: any)");
ABSL_FLAG(std::string, http_addr, "0.0.0.0:8083",
          "admin HTTP listen address HOST:PORT (/metrics, /healthz, /readyz, JSON API)");
ABSL_FLAG(std::string, broker, "127.0.0.1:50051", "event-broker gRPC address HOST:PORT");
ABSL_FLAG(std::string, data_dir, "./data/webhook-delivery",
          "directory of the webhook registry and the delivery outbox (embedded store)");
ABSL_FLAG(absl::Duration, delivery_lease, absl::Seconds(30),
          "how long a claimed delivery is one replica's without renewal: after a replica dies, "
          "others deliver what it held once this has passed");
ABSL_FLAG(absl::Duration, registry_poll, absl::Milliseconds(250),
          "shared store: how often a replica re-reads the webhook registry's generation for "
          "other replicas' changes (deliveries are matched against the current registry "
          "regardless)");
ABSL_FLAG(absl::Duration, delivery_retention, absl::Hours(24 * 7),
          "shared store: delivered and failed deliveries stay listed this long");
ABSL_FLAG(bool, allow_private_targets, false,
          "allow webhook URLs on loopback, private (RFC 1918, CGNAT, IPv6 unique local) and "
          "link-local addresses (local development and tests; in a cluster prefer "
          "--allow_targets)");
ABSL_FLAG(std::string, allow_targets, "",
          "CIDR[,CIDR...]: webhook URLs may resolve to addresses in these ranges, e.g. "
          "10.0.0.0/8 for in-cluster receivers (cloud metadata addresses are refused always)");
ABSL_FLAG(std::string, secrets_key_file, "",
          "signing secrets are stored encrypted (AES-256-GCM) under the first key of this file "
          "(base64 of 32 bytes per line; later lines are older keys, still read)");
ABSL_FLAG(int32_t, webhook_max_retries, 5, "default retry_attempts of a registration");
ABSL_FLAG(int32_t, webhook_retry_delay, 5000, "default retry_delay of a registration, in ms");
ABSL_FLAG(int32_t, webhook_timeout, 30000, "default timeout of a registration, in ms");
ABSL_FLAG(int32_t, max_in_flight, 256, "HTTP requests in flight, all endpoints together");
ABSL_FLAG(int32_t, max_in_flight_per_webhook, 8, "HTTP requests in flight to one endpoint");
ABSL_FLAG(absl::Duration, ack_deadline, absl::Seconds(30),
          "ack deadline asked of the broker: an event this replica took and did not record "
          "within it goes to another replica");
ABSL_FLAG(std::string, start, "latest",
          "where a new webhook-delivery consumer group starts: latest or earliest");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error");

namespace switchboard::webhooks {
namespace {

absl::Status ValidateFlags() {
  if (absl::GetFlag(FLAGS_webhook_max_retries) < 0 ||
      absl::GetFlag(FLAGS_webhook_max_retries) > 20) {
    return absl::InvalidArgumentError("webhook_max_retries (WEBHOOK_MAX_RETRIES): 0 to 20");
  }
  if (absl::GetFlag(FLAGS_webhook_retry_delay) < 100 ||
      absl::GetFlag(FLAGS_webhook_retry_delay) > 86400000) {
    return absl::InvalidArgumentError(
        "webhook_retry_delay (WEBHOOK_RETRY_DELAY): 100 to 86400000 ms");
  }
  if (absl::GetFlag(FLAGS_webhook_timeout) < 100 || absl::GetFlag(FLAGS_webhook_timeout) > 300000) {
    return absl::InvalidArgumentError("webhook_timeout (WEBHOOK_TIMEOUT): 100 to 300000 ms");
  }
  if (absl::GetFlag(FLAGS_max_in_flight) < 1 ||
      absl::GetFlag(FLAGS_max_in_flight_per_webhook) < 1) {
    return absl::InvalidArgumentError("max_in_flight, max_in_flight_per_webhook: at least 1");
  }
  if (absl::GetFlag(FLAGS_start) != "latest" && absl::GetFlag(FLAGS_start) != "earliest") {
    return absl::InvalidArgumentError("start: latest or earliest");
  }
  if (absl::GetFlag(FLAGS_delivery_lease) < absl::Seconds(1) ||
      absl::GetFlag(FLAGS_delivery_lease) > absl::Hours(1)) {
    return absl::InvalidArgumentError("delivery_lease: 1s to 1h");
  }
  if (absl::GetFlag(FLAGS_registry_poll) < absl::Milliseconds(10) ||
      absl::GetFlag(FLAGS_registry_poll) > absl::Hours(1)) {
    return absl::InvalidArgumentError("registry_poll: 10ms to 1h");
  }
  if (absl::GetFlag(FLAGS_ack_deadline) < absl::Seconds(1) ||
      absl::GetFlag(FLAGS_ack_deadline) > absl::Minutes(10)) {
    return absl::InvalidArgumentError("ack_deadline: 1s to 10m");
  }
  if (absl::GetFlag(FLAGS_delivery_retention) < absl::Minutes(1)) {
    return absl::InvalidArgumentError("delivery_retention: at least 1m");
  }
  return absl::OkStatus();
}

struct Stores {
  std::unique_ptr<WebhookStore> webhooks;
  std::unique_ptr<DeliveryStore> deliveries;
  bool embedded = false;
};

// The stores --store names: configuration mistakes are INVALID_ARGUMENT
// naming the flag; an unreachable Redis is waited for.
absl::StatusOr<Stores> OpenStores(redis::RedisMetrics* redis_metrics) {
  absl::StatusOr<redis::SharedStoreFlags> shared = redis::ReadSharedStoreFlags();
  if (!shared.ok()) return shared.status();
  const redis::SharedStoreFlags& flags = *shared;
  Stores out;
  if (flags.embedded) {
    auto webhooks = SqliteWebhookStore::Open(absl::GetFlag(FLAGS_data_dir));
    if (!webhooks.ok()) return webhooks.status();
    auto deliveries = SqliteDeliveryStore::Open(absl::GetFlag(FLAGS_data_dir));
    if (!deliveries.ok()) return deliveries.status();
    LogInfo("webhook store", {{"store", absl::StrCat("sqlite:", absl::GetFlag(FLAGS_data_dir))}});
    out.webhooks = *std::move(webhooks);
    out.deliveries = *std::move(deliveries);
    out.embedded = true;
    return out;
  }
  RedisWebhookStoreOptions opts;
  opts.prefix = flags.prefix;
  opts.timeout = flags.timeout;
  opts.min_replicas = flags.min_replicas;
  opts.retention = absl::GetFlag(FLAGS_delivery_retention);
  // A lease must outlast the Redis calls of a scheduler round, or a living
  // replica's deliveries go to another (a duplicate).
  if (absl::GetFlag(FLAGS_delivery_lease) < 3 * opts.timeout) {
    return absl::InvalidArgumentError(absl::StrCat(
        "delivery_lease: ", absl::FormatDuration(absl::GetFlag(FLAGS_delivery_lease)),
        " is shorter than 3 x redis_timeout (", absl::FormatDuration(opts.timeout), ")"));
  }
  LogInfo("webhook store",
          {{"store", absl::StrCat(flags.config.Redacted(), " prefix={", opts.prefix, "}")}});
  std::shared_ptr<redis::RedisClient> client = redis::NewRedisClient(flags.config, redis_metrics);
  auto webhooks = std::make_unique<RedisWebhookStore>(client, opts);
  // The registry is read at start, so Redis must answer: wrong credentials
  // are a configuration mistake; an unreachable Redis is waited for (the
  // pod restarts if it never comes, as with any other missing dependency).
  for (int attempt = 0;; ++attempt) {
    absl::Status reach = webhooks->Check();
    if (absl::IsUnauthenticated(reach) || absl::IsFailedPrecondition(reach)) {
      return absl::InvalidArgumentError(absl::StrCat("store: ", reach.message()));
    }
    if (reach.ok() || attempt >= 30) break;
    LogWarn("webhook store not reachable yet", {{"error", reach.ToString()}});
    absl::SleepFor(absl::Seconds(1));
  }
  out.webhooks = std::move(webhooks);
  out.deliveries = std::make_unique<RedisDeliveryStore>(client, opts);
  return out;
}

int Run() {
  if (absl::Status s = ValidateFlags(); !s.ok()) {
    LogError("bad flag", {{"error", std::string(s.message())}});
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  // Before the edges: their threads call the authenticator until they stop.
  AuthMetrics auth_metrics(*registry, "webhooks");
  absl::StatusOr<EdgeSecurity> security =
      ReadEdgeSecurityFlags(&auth_metrics, /*mesh_client=*/true);
  if (!security.ok()) {
    LogError("bad flag", {{"error", std::string(security.status().message())}});
    return 2;
  }
  ServiceEdges edges(registry, "webhooks");
  security->ApplyTo(&edges);
  WebhookMetrics metrics(*registry);
  redis::RedisMetrics redis_metrics(*registry, "webhooks");
  absl::StatusOr<Stores> stores = OpenStores(&redis_metrics);
  if (!stores.ok()) {
    bool bad_flag = absl::IsInvalidArgument(stores.status());
    LogError(bad_flag ? "bad flag" : "cannot open stores",
             {{"error", std::string(stores.status().message())}});
    return bad_flag ? 2 : 1;
  }
  std::optional<SecretBox> box;
  if (!absl::GetFlag(FLAGS_secrets_key_file).empty()) {
    absl::StatusOr<SecretBox> opened =
        SecretBox::FromKeyFile(absl::GetFlag(FLAGS_secrets_key_file));
    if (!opened.ok()) {
      LogError("bad flag", {{"error", std::string(opened.status().message())}});
      return 2;
    }
    box = *std::move(opened);
  } else {
    LogWarn("webhook signing secrets are stored as they are (set --secrets_key_file)");
  }
  auto sealed = std::make_unique<SealedWebhookStore>(std::move(stores->webhooks), box);
  if (absl::StatusOr<int> resealed = sealed->ResealAll(); !resealed.ok()) {
    LogError("cannot load webhooks", {{"error", resealed.status().ToString()}});
    return 1;
  } else if (*resealed > 0) {
    LogInfo("webhook secrets sealed with the current key", {{"webhooks", *resealed}});
  }
  stores->webhooks = std::move(sealed);
  WebhookStore* webhook_store = stores->webhooks.get();
  DeliveryStore* delivery_store = stores->deliveries.get();
  RegistryConfig rc;
  rc.default_retry_attempts = absl::GetFlag(FLAGS_webhook_max_retries);
  rc.default_retry_delay = absl::Milliseconds(absl::GetFlag(FLAGS_webhook_retry_delay));
  rc.default_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_webhook_timeout));
  absl::StatusOr<TargetPolicy> targets = MakeTargetPolicy(
      absl::GetFlag(FLAGS_allow_private_targets), absl::GetFlag(FLAGS_allow_targets));
  if (!targets.ok()) {
    LogError("bad flag", {{"error", std::string(targets.status().message())}});
    return 2;
  }
  rc.targets = *targets;
  WebhookRegistry webhooks(rc, webhook_store, RealClock::Get());
  if (absl::Status s = webhooks.Load(); !s.ok()) {
    LogError("cannot load webhooks", {{"error", s.ToString()}});
    return 1;
  }
  CurlMultiSender sender(absl::GetFlag(FLAGS_max_in_flight),
                         absl::GetFlag(FLAGS_max_in_flight_per_webhook));
  EngineConfig ec;
  ec.targets = rc.targets;
  ec.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  ec.max_in_flight_per_webhook = absl::GetFlag(FLAGS_max_in_flight_per_webhook);
  ec.lease = absl::GetFlag(FLAGS_delivery_lease);
  DeliveryEngine engine(ec, &webhooks, delivery_store, &sender, RealClock::Get(), &metrics);
  GrpcBrokerClientOptions broker_options;
  broker_options.target = absl::GetFlag(FLAGS_broker);
  broker_options.tls = security->broker_tls;
  broker_options.bearer_token = security->broker_token;
  std::unique_ptr<BrokerClient> broker = NewGrpcBrokerClient(broker_options);
  WebhookCoreOptions options;
  options.ack_deadline = absl::GetFlag(FLAGS_ack_deadline);
  options.registry_poll = absl::GetFlag(FLAGS_registry_poll);
  if (absl::GetFlag(FLAGS_start) == "earliest") {
    options.start = broker::v1::SubscribeRequest::EARLIEST;
  }
  WebhookCore core(options, &webhooks, delivery_store, &engine, broker.get(), RealClock::Get(),
                   &metrics);
  engine.Start();
  if (absl::Status s = core.Start(); !s.ok()) {
    LogError("cannot start", {{"error", s.ToString()}});
    return 1;
  }
  // After core: the service's pools (where its calls run) drain and join
  // before core goes.
  WebhookGrpcServiceOptions service_options;
  service_options.auth = security->auth.get();
  WebhookGrpcService service(&core, service_options);
  RegisterWebhookHttpApi(&edges.http(), &core);
  if (stores->embedded) {
    sqlite::AddBackupRoute(&edges.http(), absl::GetFlag(FLAGS_data_dir),
                           {"webhooks.db", "deliveries.db"});
  }
  if (absl::Status st = edges.Start(absl::GetFlag(FLAGS_grpc_addr), absl::GetFlag(FLAGS_http_addr),
                                    {&service}, [&core] { return core.ready(); },
                                    {{"broker", absl::GetFlag(FLAGS_broker)},
                                     {"shared_store", webhook_store->shared()},
                                     {"allow_private_targets", rc.targets.allow_private},
                                     {"allow_targets", absl::GetFlag(FLAGS_allow_targets)}});
      !st.ok()) {
    LogError("cannot start", {{"error", st.ToString()}});
    return 1;
  }

  int sig = WaitForShutdownSignal();
  LogInfo("shutting down", {{"signal", sig}});
  edges.BeginShutdown();
  // No new events: the subscription and resubscription threads are joined,
  // then the intake thread, the only caller of engine.RecordAll. Recorded
  // deliveries stay in the outbox.
  core.Shutdown();
  // Joins the scheduler and resolvers, stops the sender: transfers in flight
  // are abandoned (due again at the next start), no curl callback runs later.
  engine.Stop();
  // RPCs still running may only record deliveries (outbox) and Kick the
  // stopped engine; calls still queued after the grace are cancelled and
  // skipped.
  edges.Stop(absl::Seconds(1));
  LogInfo("stopped");
  return 0;
}

}  // namespace
}  // namespace switchboard::webhooks

int main(int argc, char** argv) {
  switchboard::InitService(argc, argv, "webhook-delivery",
                           "delivers events as signed, retried, durable HTTP callbacks.\n"
                           "Usage: webhook-delivery [--broker=HOST:PORT] [--data_dir=DIR] ...",
                           {{"WEBHOOK_MAX_RETRIES", "webhook_max_retries"},
                            {"WEBHOOK_RETRY_DELAY", "webhook_retry_delay"},
                            {"WEBHOOK_TIMEOUT", "webhook_timeout"},
                            {"REDIS_URL", "store"},
                            {"REDIS_EVENT_CHANNEL", "redis_prefix"}});
  return switchboard::webhooks::Run();
}
