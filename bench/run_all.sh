#!/usr/bin/env bash
# Runs the peer benchmarks (../shared/peers) and ours back to back on this
# machine, then prints a side-by-side markdown table with ratios.
#   bash bench/run_all.sh [--skip-peers]     results in /tmp/switchboard-bench/
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/peers}
OUT=${OUT:-/tmp/switchboard-bench}
mkdir -p "$OUT"
[ -x "$ROOT/build/bench/broker_bench" ] || bash "$ROOT/scripts/build.sh"
if [ "${1:-}" != "--skip-peers" ]; then
  RESULTS="$OUT/peers.jsonl" bash "$PEERS/run_all.sh" >/dev/null
fi
"$ROOT/build/bench/broker_bench" | tee "$OUT/switchboard.jsonl"
# The cost of TLS and tokens: plain, then TLS + a bearer token, back to back.
for security in "" --tls_auth; do
  "$ROOT/build/bench/broker_bench" --only=unary1,batch $security | tee -a "$OUT/switchboard.jsonl"
done
for fsync in everysec always; do
  "$ROOT/build/bench/broker_bench" --redis=$fsync --only=batch,drain,e2e |
    tee -a "$OUT/switchboard.jsonl"
done
"$ROOT/build/bench/job_bench" | tee -a "$OUT/switchboard.jsonl"
"$ROOT/build/bench/job_bench" --redis=everysec | tee -a "$OUT/switchboard.jsonl"
HOOK_PORT=${HOOK_PORT:-18090} bash "$ROOT/bench/webhook_bench.sh" | tee -a "$OUT/switchboard.jsonl"
# webhook-delivery on Redis: one replica, then two sharing the outbox.
for replicas in 1 2; do
  HOOK_PORT=${HOOK_PORT:-18090} bash "$ROOT/bench/webhook_bench.sh" --redis=everysec \
    --replicas=$replicas | tee -a "$OUT/switchboard.jsonl"
done
python3 "$ROOT/bench/table.py" "$OUT/peers.jsonl" "$OUT/switchboard.jsonl" | tee "$OUT/table.md"
