#!/usr/bin/env bash
# Installs what is missing, builds, and starts Switchboard locally on embedded
# storage under ./data. Today that is the event-broker (gRPC :50051, admin HTTP
# :8081); job-worker and webhook-delivery join the mesh as they land.
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

"$BIN/event_broker/event-broker" --data_dir="$DATA/event-broker" \
  --grpc_addr="${BROKER_GRPC:-127.0.0.1:50051}" --http_addr="${BROKER_HTTP:-127.0.0.1:8081}" &
PIDS+=($!)

cat <<MSG

Switchboard is up (logs are JSON lines on this terminal).
  event-broker  gRPC 127.0.0.1:50051   admin http://127.0.0.1:8081/metrics

Try, in another terminal (README.md has more):
  grpcurl -plaintext -d '{"event":{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"demo-1","data":{"customerId":"cus_1","total":42.5}}}' \\
    127.0.0.1:50051 switchboard.broker.v1.EventBroker/Publish
  grpcurl -plaintext -d '{"correlationId":"demo-1"}' 127.0.0.1:50051 switchboard.broker.v1.EventBroker/GetEventHistory
  curl -s http://127.0.0.1:8081/api/events/stats

MSG
wait
