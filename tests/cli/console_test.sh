#!/usr/bin/env bash
# The live console in a real browser: Debian's Chromium, headless, driven by
# playwright-core (console_test.js) against the whole mesh on embedded
# storage with a signature-checking receiver. Usage: console_test.sh BROKER
# WORKER WEBHOOKS RECEIVER [SCREENSHOT_OUT]
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1 WORKER_BIN=$2 WEBHOOK_BIN=$3 RECEIVER_BIN=$4 SHOT=${5:-$WORK/console-trace.png}
NODE_MODULES="$ROOT/.cache/node/node_modules"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -d "$NODE_MODULES/playwright-core" ] || fail "playwright-core not installed (scripts/install-deps.sh)"
[ -x "$CHROMIUM" ] || fail "$CHROMIUM missing (scripts/install-deps.sh installs Debian's chromium)"
[ -x "$BUF" ] || fail "buf is not installed (scripts/install-deps.sh)"
SECRET=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD

"$RECEIVER_BIN" --http_addr=127.0.0.1:0 --secret="$SECRET" >"$WORK/receiver.log" 2>&1 &
PIDS+=($!)
wait_listening "$WORK/receiver.log" RECV

# The shop's own site, another origin than the broker's, serving the
# README's order-tracking page pointed at the broker (known once it runs).
node -e '
  const [page, addrFile] = process.argv.slice(1);
  const fs = require("fs");
  const server = require("http").createServer((req, res) => {
    const broker = fs.readFileSync(addrFile, "utf8").trim();
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(fs.readFileSync(page, "utf8").replace("http://localhost:8081", "http://" + broker));
  });
  server.listen(0, "127.0.0.1", () => console.log("listening http=127.0.0.1:" + server.address().port));
' "$ROOT/docs/examples/order-tracking.html" "$WORK/broker-http" >"$WORK/shop.log" 2>&1 &
PIDS+=($!)
wait_listening "$WORK/shop.log" SHOP

# The console reads job-worker and webhook-delivery at addresses given at
# start, and they need the broker's: a first broker gives the ports, then
# restarts on them with the console's flags (the mesh reconnects).
start_service FIRST "$BROKER_BIN" --data_dir="$WORK/broker"
start_service WORKER "$WORKER_BIN" --broker="$FIRST_GRPC" --data_dir="$WORK/worker"
start_service HOOKS "$WEBHOOK_BIN" --broker="$FIRST_GRPC" --data_dir="$WORK/hooks" \
  --allow_private_targets
kill -TERM "$FIRST_PID"
wait "$FIRST_PID" 2>/dev/null || true
start_service BROKER "$BROKER_BIN" --data_dir="$WORK/broker" --grpc_addr="$FIRST_GRPC" \
  --http_addr="$FIRST_HTTP" --console_jobs_addr="$WORKER_GRPC" --console_webhooks_addr="$HOOKS_GRPC" \
  --sse_allow_origins="http://$SHOP"
echo "$BROKER_HTTP" >"$WORK/broker-http"
wait_ready "$BROKER_HTTP" "$WORKER_HTTP" "$HOOKS_HTTP"
out=$(curl -s -XPOST "http://$HOOKS_HTTP/api/webhooks/register" \
  -d "{\"url\":\"http://$RECV/webhooks\",\"events\":[\"order.*\"],\"secret\":\"$SECRET\"}")
grep -q '"id":"wh_' <<<"$out" || fail "register: $out"

BROKER_HTTP=$BROKER_HTTP BROKER_GRPC=$BROKER_GRPC BUF=$BUF NODE_MODULES=$NODE_MODULES \
  CHROMIUM=$CHROMIUM WORK=$WORK SHOT=$SHOT SHOP=$SHOP \
  node "$(dirname "$0")/console_test.js" || {
    for f in BROKER WORKER HOOKS; do echo "--- $f"; tail -20 "$WORK/$f.log"; done
    fail "console_test.js"
  }
echo "console test passed; trace screenshot at $SHOT"
