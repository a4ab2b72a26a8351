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
promtool check metrics <"$WORK/metrics.txt" || fail "promtool check metrics"
echo "1 passed, 0 failed"
