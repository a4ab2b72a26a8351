#!/usr/bin/env bash
# /metrics of a service that has done some work passes `promtool check metrics`.
source "$(dirname "$0")/lib.sh"
BIN=$1
command -v promtool >/dev/null || fail "promtool missing (Debian package prometheus)"
start_service SVC "$BIN" --data_dir="$WORK/data"
curl -sf -XPOST "http://$SVC_HTTP/api/events/test" >/dev/null || fail "test publish"
curl -sf "http://$SVC_HTTP/metrics" >"$WORK/metrics.txt" || fail "no /metrics"
grep -q '^switchboard_broker_events_published_total{type="system.test"} 1' "$WORK/metrics.txt" ||
  fail "published counter missing"
for m in switchboard_broker_process_resident_memory_bytes switchboard_broker_process_cpu_seconds_total \
         switchboard_broker_process_open_fds; do
  grep -q "^$m " "$WORK/metrics.txt" || fail "$m missing"
done
# A gRPC call shows up in the shared interceptor's metrics, by method and code.
"$BUF" curl --protocol grpc --http2-prior-knowledge -d '{}' \
  "http://$SVC_GRPC/switchboard.broker.v1.EventBroker/GetStats" >/dev/null || fail "GetStats"
curl -sf "http://$SVC_HTTP/metrics" >"$WORK/metrics.txt" || fail "no /metrics"
grep -q '^switchboard_broker_grpc_requests_total{code="OK",method="/switchboard.broker.v1.EventBroker/GetStats"} 1' \
  "$WORK/metrics.txt" || fail "grpc request counter missing"
grep -q '^switchboard_broker_grpc_request_duration_seconds_count{method="/switchboard.broker.v1.EventBroker/GetStats"} 1' \
  "$WORK/metrics.txt" || fail "grpc latency histogram missing"
promtool check metrics <"$WORK/metrics.txt" || fail "promtool check metrics"
echo "1 passed, 0 failed"
