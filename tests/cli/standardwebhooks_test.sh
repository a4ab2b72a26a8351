#!/usr/bin/env bash
# An outside verifier accepts our real requests: every delivery of an
# end-to-end run (an order through broker and worker, plus test events) is
# verified by the npm standardwebhooks package, and the data of every order.*
# and job.* body (an order that succeeds and one whose payment fails) is valid
# against docs/schemas/ by the npm ajv validator.
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1 WORKER_BIN=$2 WEBHOOK_BIN=$3
NODE_MODULES="$ROOT/.cache/node/node_modules"
[ -d "$NODE_MODULES/standardwebhooks" ] || fail "standardwebhooks not installed (scripts/install-deps.sh)"
SECRET=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD

node "$(dirname "$0")/standardwebhooks_receiver.js" "$NODE_MODULES" "$SECRET" "$ROOT/docs/schemas" \
  >"$WORK/node.log" 2>&1 &
PIDS+=($!)
wait_listening "$WORK/node.log" RECV

start_service BROKER "$BROKER_BIN" --data_dir="$WORK/broker"
# Payments above 100 fail: the second order ends with order.payment_failed.
echo '{"paymentRule":{"failAboveTotal":100}}' >"$WORK/worker.json"
start_service WORKER "$WORKER_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/worker" --config="$WORK/worker.json"
start_service HOOKS "$WEBHOOK_BIN" --broker="$BROKER_GRPC" --data_dir="$WORK/hooks" --allow_private_targets
wait_ready "$WORKER_HTTP" "$HOOKS_HTTP"

out=$(curl -s -XPOST "http://$HOOKS_HTTP/api/webhooks/register" \
  -d "{\"url\":\"http://$RECV/hook\",\"events\":[\"order.*\",\"job.*\"],\"secret\":\"$SECRET\"}")
id=$(grep -o '"id":"wh_[^"]*"' <<<"$out" | cut -d'"' -f4)
[ -n "$id" ] || fail "register: $out"

curl -sf -XPOST "http://$BROKER_HTTP/api/events/test" \
  -d '{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"sw-1","data":{"customerId":"c1","total":10}}' >/dev/null
curl -sf -XPOST "http://$BROKER_HTTP/api/events/test" \
  -d '{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"sw-2","data":{"customerId":"c2","total":500}}' >/dev/null
for i in 1 2 3; do
  curl -sf -XPOST "http://$HOOKS_HTTP/api/webhooks/test" -d "{\"webhookId\":\"$id\"}" >/dev/null || fail "test event"
done
# The order flow: 7 order.* events and 12 job.* events (4 jobs x 3), plus 3
# test events; the failed payment: 4 order.* and 6 job.* events.
for _ in $(seq 400); do
  stats=$(curl -s "http://$RECV/stats")
  verified=$(grep -o '"verified":[0-9]*' <<<"$stats" | cut -d: -f2)
  [ "${verified:-0}" -ge 32 ] && break
  sleep 0.05
done
failed=$(grep -o '"failed":[0-9]*' <<<"$stats" | cut -d: -f2)
validated=$(grep -o '"validated":[0-9]*' <<<"$stats" | cut -d: -f2)
invalid=$(grep -o '"invalid":[0-9]*' <<<"$stats" | cut -d: -f2)
[ "${verified:-0}" -ge 32 ] || fail "verified only ${verified:-0}: $stats"
[ "$failed" = 0 ] || fail "standardwebhooks rejected $failed requests: $(cat "$WORK/node.log")"
[ "$invalid" = 0 ] || fail "$invalid bodies do not match docs/schemas: $(cat "$WORK/node.log")"
# 6 + 3 order.* (no checkout_initiated) and 12 + 6 job.* bodies were validated.
[ "${validated:-0}" -ge 27 ] || fail "validated only ${validated:-0}: $stats"
curl -sf "http://$HOOKS_HTTP/metrics" >"$WORK/hooks-metrics.txt" || fail "no /metrics"
grep -q '^switchboard_webhooks_deliveries_total{.*outcome="delivered".*} ' "$WORK/hooks-metrics.txt" ||
  fail "deliveries counter missing"
if command -v promtool >/dev/null; then
  promtool check metrics <"$WORK/hooks-metrics.txt" || fail "promtool check metrics (webhook-delivery)"
fi
echo "1 passed, 0 failed"
