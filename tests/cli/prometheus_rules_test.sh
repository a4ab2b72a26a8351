#!/usr/bin/env bash
# Prometheus configuration, rules and alerts are valid and unit-tested, the
# Grafana dashboard parses with a query in every panel, and every metric they
# use exists in a live scrape of the three services, so neither can drift from
# the code.
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1 WORKER_BIN=$2 WEBHOOK_BIN=$3
P="$ROOT/deploy/prometheus"
command -v promtool >/dev/null || fail "promtool missing (Debian package prometheus)"
promtool check config "$P/prometheus.yml" >/dev/null || fail "promtool check config"
promtool check rules "$P/rules.yml" "$P/alerts.yml" >/dev/null || fail "promtool check rules"
(cd "$P" && promtool test rules alerts_test.yml) || fail "promtool test rules"

start_service BROKER "$BROKER_BIN" --data_dir="$WORK/broker"
start_service WORKER "$WORKER_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/worker"
start_service HOOKS "$WEBHOOK_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/hooks" --allow_private_targets
wait_ready "$WORKER_HTTP" "$HOOKS_HTTP"
# Some traffic, so labelled families have samples: an order, a webhook that fails.
curl -sf -XPOST "http://$HOOKS_HTTP/api/webhooks/register" \
  -d '{"url":"http://127.0.0.1:1/nothing-here","events":["order.*"],"retryAttempts":0}' >/dev/null ||
  fail "register"
curl -sf -XPOST "http://$BROKER_HTTP/api/events/test" \
  -d '{"type":"order.checkout_initiated","source":"t","correlationId":"p-1","data":{"total":5}}' >/dev/null
# A gRPC call to each service (the interceptor's metrics appear with the first call).
[ -x "$BUF" ] || fail "buf is not installed (scripts/install-deps.sh installs it)"
"$BUF" curl --protocol grpc --http2-prior-knowledge "http://$WORKER_GRPC/switchboard.jobs.v1.JobWorker/GetStats" >/dev/null
"$BUF" curl --protocol grpc --http2-prior-knowledge "http://$HOOKS_GRPC/switchboard.webhooks.v1.WebhookService/GetStats" >/dev/null
for _ in $(seq 200); do
  curl -s "http://$HOOKS_HTTP/metrics" | grep -q '^switchboard_webhooks_deliveries_total' &&
    curl -s "http://$HOOKS_HTTP/metrics" | grep -q '^switchboard_webhooks_queue_depth' &&
    curl -s "http://$WORKER_HTTP/metrics" | grep -q '^switchboard_worker_jobs_total' && break
  sleep 0.05
done
for svc in "$BROKER_HTTP" "$WORKER_HTTP" "$HOOKS_HTTP"; do curl -sf "http://$svc/metrics"; done >"$WORK/scrape.txt"
# Names the services export (from # TYPE lines and samples).
{ awk '/^# TYPE /{print $3}' "$WORK/scrape.txt"; grep -v '^#' "$WORK/scrape.txt" | sed 's/[{ ].*//'; } |
  sort -u >"$WORK/exported.txt"
# The dashboard parses and every panel has a query; its expressions join the
# names checked below.
DASH="$ROOT/deploy/grafana/dashboards/switchboard.json"
node -e '
  const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  let n = 0;
  for (const p of d.panels) {
    if (p.type === "row") continue;
    const exprs = (p.targets || []).map(t => t.expr).filter(e => e && e.trim());
    if (exprs.length === 0) { console.error("panel without a query: " + p.title); process.exit(1); }
    for (const e of exprs) console.log(e);
    n++;
  }
  if (n < 10) { console.error("only " + n + " panels"); process.exit(1); }
' "$DASH" >"$WORK/dashboard_exprs.txt" || fail "dashboard"
missing=0
for name in $(grep -ohE 'switchboard_[a-z0-9_]+' "$P/rules.yml" "$P/alerts.yml" "$WORK/dashboard_exprs.txt" | sort -u); do
  base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$name")
  if ! grep -qx "$name" "$WORK/exported.txt" && ! grep -qx "$base" "$WORK/exported.txt"; then
    echo "metric used in rules or the dashboard but not exported: $name" >&2
    missing=1
  fi
done
[ $missing = 0 ] || fail "rules use metrics the services do not export"
echo "1 passed, 0 failed"
