#!/usr/bin/env bash
# An outside client (buf curl, like grpcurl) finds the broker's services by
# reflection, publishes with JSON and reads history: the README's commands.
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1
[ -x "$BUF" ] || fail "buf is not installed (scripts/install-deps.sh installs it)"
start_service BROKER "$BROKER_BIN" --data_dir="$WORK/data"
G="http://$BROKER_GRPC"

services=$("$BUF" curl --protocol grpc --http2-prior-knowledge --list-services "$G")
grep -qx 'switchboard.broker.v1.EventBroker' <<<"$services" || fail "EventBroker not listed: $services"
grep -qx 'grpc.health.v1.Health' <<<"$services" || fail "health not listed: $services"
methods=$("$BUF" curl --protocol grpc --http2-prior-knowledge --list-methods "$G")
grep -q 'switchboard.broker.v1.EventBroker/PublishBatch' <<<"$methods" || fail "methods: $methods"

out=$("$BUF" curl --protocol grpc --http2-prior-knowledge \
  -d '{"event":{"type":"order.checkout_initiated","source":"checkout-service","correlationId":"cli-1","data":{"customerId":"cus_1","total":42.5}}}' \
  "$G/switchboard.broker.v1.EventBroker/Publish")
grep -q '"sequence": "1"' <<<"$out" || fail "publish: $out"

out=$("$BUF" curl --protocol grpc --http2-prior-knowledge -d '{"correlation_id":"cli-1","limit":10}' \
  "$G/switchboard.broker.v1.EventBroker/GetEventHistory")
grep -q '"type": "order.checkout_initiated"' <<<"$out" || fail "history: $out"
grep -q '"total": 42.5' <<<"$out" || fail "history data: $out"

out=$("$BUF" curl --protocol grpc --http2-prior-knowledge -d '{"service":""}' \
  "$G/grpc.health.v1.Health/Check")
grep -q 'SERVING' <<<"$out" || fail "health: $out"

# Bad input through the outside client: INVALID_ARGUMENT naming the field.
set +e
out=$("$BUF" curl --protocol grpc --http2-prior-knowledge -d '{"event":{"type":"Order"}}' \
  "$G/switchboard.broker.v1.EventBroker/Publish" 2>&1)
set -e
grep -q 'invalid_argument' <<<"$out" || fail "bad input code: $out"
grep -q 'event.type' <<<"$out" || fail "bad input message: $out"
echo "1 passed, 0 failed"
