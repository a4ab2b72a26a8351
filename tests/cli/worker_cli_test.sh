#!/usr/bin/env bash
# The worker as an outside client sees it: reflection lists JobWorker, an order
# started with buf curl completes, the worker's /metrics passes promtool.
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1 WORKER_BIN=$2
[ -x "$BUF" ] || fail "buf is not installed (scripts/install-deps.sh installs it)"
command -v promtool >/dev/null || fail "promtool missing (Debian package prometheus)"
start_service BROKER "$BROKER_BIN" --data_dir="$WORK/broker"
start_service WORKER "$WORKER_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/worker"
for _ in $(seq 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$WORKER_HTTP/readyz")" = 200 ] && break
  sleep 0.05
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$WORKER_HTTP/readyz")" = 200 ] || fail "worker not ready"

services=$("$BUF" curl --protocol grpc --http2-prior-knowledge --list-services "http://$WORKER_GRPC")
grep -qx 'switchboard.jobs.v1.JobWorker' <<<"$services" || fail "JobWorker not listed: $services"

"$BUF" curl --protocol grpc --http2-prior-knowledge \
  -d '{"event":{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"cli-order","data":{"customerId":"cus_1","total":42.5}}}' \
  "http://$BROKER_GRPC/switchboard.broker.v1.EventBroker/Publish" >/dev/null || fail "publish"
done=0
for _ in $(seq 200); do
  out=$("$BUF" curl --protocol grpc --http2-prior-knowledge -d '{"correlation_id":"cli-order"}' \
    "http://$BROKER_GRPC/switchboard.broker.v1.EventBroker/GetEventHistory")
  if grep -q '"type": "order.completed"' <<<"$out"; then done=1; break; fi
  sleep 0.05
done
[ $done = 1 ] || fail "order did not complete: $out"

stats=$("$BUF" curl --protocol grpc --http2-prior-knowledge "http://$WORKER_GRPC/switchboard.jobs.v1.JobWorker/GetStats")
grep -q '"name": "payments"' <<<"$stats" || fail "stats: $stats"

curl -sf "http://$WORKER_HTTP/metrics" >"$WORK/worker-metrics.txt" || fail "no /metrics"
grep -q '^switchboard_worker_jobs_total{.*outcome="completed".*} ' "$WORK/worker-metrics.txt" ||
  fail "jobs counter missing"
promtool check metrics <"$WORK/worker-metrics.txt" || fail "promtool check metrics (worker)"
curl -sf "http://$BROKER_HTTP/metrics" | promtool check metrics || fail "promtool check metrics (broker)"
echo "1 passed, 0 failed"
