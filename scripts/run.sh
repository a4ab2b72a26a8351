#!/usr/bin/env bash
# Installs what is missing, builds, and starts Switchboard locally on embedded
# storage under ./data: event-broker (gRPC :50051, admin HTTP :8081) and
# job-worker (:50052 / :8082); webhook-delivery joins the mesh with issue 4.
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

BROKER_GRPC=${BROKER_GRPC:-127.0.0.1:50051}
"$BIN/event_broker/event-broker" --data_dir="$DATA/event-broker" \
  --grpc_addr="$BROKER_GRPC" --http_addr="${BROKER_HTTP:-127.0.0.1:8081}" &
PIDS+=($!)
# The worker waits for the broker by itself (its client reconnects).
"$BIN/job_worker/job-worker" --broker="$BROKER_GRPC" --data_dir="$DATA/job-worker" \
  --grpc_addr="${WORKER_GRPC:-127.0.0.1:50052}" --http_addr="${WORKER_HTTP:-127.0.0.1:8082}" \
  ${WORKER_CONFIG:+--config="$WORKER_CONFIG"} &
PIDS+=($!)

cat <<MSG

Switchboard is up (logs are JSON lines on this terminal).
  event-broker  gRPC 127.0.0.1:50051   admin http://127.0.0.1:8081/metrics
  job-worker    gRPC 127.0.0.1:50052   admin http://127.0.0.1:8082/metrics

Start an order and watch it, in another terminal (README.md has more):
  grpcurl -plaintext -d '{"event":{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"demo-1","data":{"customerId":"cus_1","total":42.5,"items":[{"sku":"tea","qty":2}]}}}' \\
    127.0.0.1:50051 switchboard.broker.v1.EventBroker/Publish
  grpcurl -plaintext -d '{"correlationId":"demo-1"}' 127.0.0.1:50051 switchboard.broker.v1.EventBroker/GetEventHistory
  grpcurl -plaintext 127.0.0.1:50052 switchboard.jobs.v1.JobWorker/GetStats
  curl -s http://127.0.0.1:8081/api/events/stats

MSG
wait
