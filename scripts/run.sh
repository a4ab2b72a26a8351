#!/usr/bin/env bash
# Installs what is missing, builds, and starts the whole Switchboard mesh
# locally on embedded storage under ./data: event-broker (gRPC :50051, admin
# HTTP :8081), job-worker (:50052 / :8082), webhook-delivery (:50053 / :8083)
# and the sample webhook receiver (:9000), registered for order.* events.
# With --redis (or SWITCHBOARD_STORE=redis): a local redis-server (:6389) and
# two replicas of each service on it (the second on :50151/:8181, :50152/:8182,
# :50153/:8183).
# Ctrl-C stops everything (SIGTERM: drain, then exit).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
DATA=${SWITCHBOARD_DATA:-$ROOT/data}
mkdir -p "$DATA"
BIN="$ROOT/build/services"
PIDS=()
stop() {
  for p in "${PIDS[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
}
trap stop EXIT INT TERM

# --redis (or SWITCHBOARD_STORE=redis): the scaled-out mesh. A local
# redis-server (AOF fsynced on every write, under $DATA/redis) and two
# replicas of each service sharing it; the second replica of each listens
# 100 ports above the first.
STORE=${SWITCHBOARD_STORE:-sqlite}
# --auth: tokens on (deploy/local-auth): every call needs
# "authorization: Bearer <token>"; the README lists the development tokens.
AUTH_FLAGS=()
WORKER_AUTH=()
HOOKS_AUTH=()
ADMIN_HEADER=()
for arg in "$@"; do
  case "$arg" in
    --redis) STORE=redis ;;
    --auth)
      AUTH_FLAGS=(--auth_tokens_file="$ROOT/deploy/local-auth/tokens.jsonl")
      WORKER_AUTH=(--broker_token_file="$ROOT/deploy/local-auth/job-worker.token")
      HOOKS_AUTH=(--broker_token_file="$ROOT/deploy/local-auth/webhook-delivery.token")
      ADMIN_HEADER=(-H "Authorization: Bearer dev-admin-token")
      ;;
    *) echo "usage: scripts/run.sh [--redis] [--auth]" >&2; exit 2 ;;
  esac
done
REPLICAS=(0)
STORE_FLAGS=()
if [ "$STORE" = redis ]; then
  REDIS_PORT=${REDIS_PORT:-6389}
  mkdir -p "$DATA/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA/redis" --appendonly yes \
    --appendfsync always --save "" --maxmemory-policy noeviction --daemonize no \
    --logfile "$DATA/redis/redis.log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  REPLICAS=(0 100)
  STORE_FLAGS=(--store="redis://127.0.0.1:$REDIS_PORT")
fi
port() { echo "127.0.0.1:$(($1 + $2))"; }  # BASE OFFSET

BROKERS=""
for off in "${REPLICAS[@]}"; do
  # On SQLite each process has its own files; on Redis --data_dir is unused.
  "$BIN/event_broker/event-broker" --data_dir="$DATA/event-broker" "${STORE_FLAGS[@]}" \
    ${AUTH_FLAGS[@]+"${AUTH_FLAGS[@]}"} \
    --console_jobs_addr="$(port 50052 "$off")" --console_webhooks_addr="$(port 50053 "$off")" \
    --grpc_addr="$(port 50051 "$off")" --http_addr="$(port 8081 "$off")" &
  PIDS+=($!)
  BROKERS="${BROKERS:+$BROKERS,}$(port 50051 "$off")"
done
# Clients spread their calls over every broker replica.
BROKER_GRPC=$BROKERS
[ "${#REPLICAS[@]}" -gt 1 ] && BROKER_GRPC="ipv4:$BROKERS"
for off in "${REPLICAS[@]}"; do
  # The worker waits for the broker by itself (its client reconnects).
  "$BIN/job_worker/job-worker" --broker="$BROKER_GRPC" --data_dir="$DATA/job-worker" \
    "${STORE_FLAGS[@]}" --worker_id="worker-$off" \
    ${AUTH_FLAGS[@]+"${AUTH_FLAGS[@]}"} ${WORKER_AUTH[@]+"${WORKER_AUTH[@]}"} \
    --grpc_addr="$(port 50052 "$off")" --http_addr="$(port 8082 "$off")" \
    ${WORKER_CONFIG:+--config="$WORKER_CONFIG"} &
  PIDS+=($!)
  # Local development: the sample receiver is on loopback, which the SSRF
  # guard refuses unless told otherwise.
  "$BIN/webhook_delivery/webhook-delivery" --broker="$BROKER_GRPC" \
    --data_dir="$DATA/webhook-delivery" "${STORE_FLAGS[@]}" \
    ${AUTH_FLAGS[@]+"${AUTH_FLAGS[@]}"} ${HOOKS_AUTH[@]+"${HOOKS_AUTH[@]}"} \
    --grpc_addr="$(port 50053 "$off")" --http_addr="$(port 8083 "$off")" --allow_private_targets &
  PIDS+=($!)
done
HOOKS_HTTP=127.0.0.1:8083
# A fixed demo secret, so the receiver can verify what it gets.
SECRET=${WEBHOOK_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
RECEIVER=${RECEIVER_HTTP:-127.0.0.1:9000}
"$ROOT/build/tools/webhook_receiver/webhook-receiver" --http_addr="$RECEIVER" --secret="$SECRET" &
PIDS+=($!)
for _ in $(seq 100); do
  curl -sf "http://$HOOKS_HTTP/readyz" >/dev/null && break
  sleep 0.1
done
# The original design's receiving endpoints: order.* to order-status, job.*
# to worker-status.
register() {  # PATH EVENTS DESCRIPTION
  if ! curl -s ${ADMIN_HEADER[@]+"${ADMIN_HEADER[@]}"} "http://$HOOKS_HTTP/api/webhooks" |
      grep -q "http://$RECEIVER$1\""; then
    curl -sf -XPOST ${ADMIN_HEADER[@]+"${ADMIN_HEADER[@]}"} "http://$HOOKS_HTTP/api/webhooks/register" \
      -d "{\"url\":\"http://$RECEIVER$1\",\"events\":[\"$2\"],\"secret\":\"$SECRET\",\"description\":\"$3\"}" \
      >/dev/null || echo "run: registering the sample receiver at $1 failed" >&2
  fi
}
register /api/webhooks/order-status "order.*" "sample CRM receiver: order status"
register /api/webhooks/worker-status "job.*" "sample receiver: worker status"

cat <<MSG

Switchboard is up (logs are JSON lines on this terminal), store: $STORE$( [ "${#AUTH_FLAGS[@]}" -gt 0 ] && printf ', tokens on (add -H "authorization: Bearer dev-admin-token" to the calls below)').
  console       http://127.0.0.1:8081/console/   (live events, order traces, groups, queues, webhooks)
  event-broker  gRPC 127.0.0.1:50051   admin http://127.0.0.1:8081/metrics
  job-worker    gRPC 127.0.0.1:50052   admin http://127.0.0.1:8082/metrics
  webhooks      gRPC 127.0.0.1:50053   admin http://127.0.0.1:8083/metrics
$( [ "$STORE" = redis ] && printf '%s\n' "  (second replicas: gRPC :50151 :50152 :50153, admin :8181 :8182 :8183; redis-server 127.0.0.1:$REDIS_PORT)")
  receiver      http://$RECEIVER/api/webhooks/order-status (order.*), .../worker-status (job.*)
                (verifies signatures; GET /received lists them)

Start an order and watch it, in another terminal (README.md has more):
  grpcurl -plaintext -d '{"event":{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"demo-1","data":{"customerId":"cus_1","total":42.5,"items":[{"sku":"tea","qty":2}]}}}' \\
    127.0.0.1:50051 switchboard.broker.v1.EventBroker/Publish
  grpcurl -plaintext -d '{"correlationId":"demo-1"}' 127.0.0.1:50051 switchboard.broker.v1.EventBroker/GetEventHistory
  grpcurl -plaintext 127.0.0.1:50052 switchboard.jobs.v1.JobWorker/GetStats
  grpcurl -plaintext 127.0.0.1:50053 switchboard.webhooks.v1.WebhookService/ListDeliveries
  curl -s http://$RECEIVER/received        # the order's webhooks, as the receiver got them
  curl -s http://127.0.0.1:8081/api/events/stats

MSG
wait
