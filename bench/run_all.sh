#!/usr/bin/env bash
# Runs the peer benchmarks (../shared/peers) and ours back to back on this
# machine, then prints a side-by-side markdown table with ratios.
#   bash bench/run_all.sh [--skip-peers] [--repeat N]     results in /tmp/switchboard-bench/
# --repeat N: N rounds, each the peers then ours (interleaved, so a noisy
# stretch of the machine hits both sides), then one table of the median of
# each figure and ratio with the ratio's spread over the rounds; every
# round's own table is kept (table.<i>.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/peers}
OUT=${OUT:-/tmp/switchboard-bench}
SKIP_PEERS=0 REPEAT=1
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-peers) SKIP_PEERS=1 ;;
    --repeat) REPEAT=${2:?--repeat needs a count}; shift ;;
    --repeat=*) REPEAT=${1#--repeat=} ;;
    *) echo "run_all.sh: unknown argument $1 (--skip-peers, --repeat N)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "run_all.sh: --repeat: a count >= 1, not '$REPEAT'" >&2; exit 2; }
mkdir -p "$OUT"
[ -x "$ROOT/build/bench/broker_bench" ] || bash "$ROOT/scripts/build.sh"

# One round: the peers into $1, ours into $2.
round() {
  local peers_out=$1 ours=$2
  if [ "$SKIP_PEERS" = 0 ]; then
    rm -f "$peers_out"
    RESULTS="$peers_out" bash "$PEERS/run_all.sh" >/dev/null
  fi
  : >"$ours"
  "$ROOT/build/bench/broker_bench" | tee -a "$ours"
  # The cost of TLS and tokens: plain, then TLS + a bearer token, back to back.
  for security in "" --tls_auth; do
    "$ROOT/build/bench/broker_bench" --only=unary1,batch $security | tee -a "$ours"
  done
  for fsync in everysec always; do
    "$ROOT/build/bench/broker_bench" --redis=$fsync --only=batch,drain,e2e |
      tee -a "$ours"
  done
  "$ROOT/build/bench/job_bench" | tee -a "$ours"
  "$ROOT/build/bench/job_bench" --redis=everysec | tee -a "$ours"
  HOOK_PORT=${HOOK_PORT:-18090} bash "$ROOT/bench/webhook_bench.sh" | tee -a "$ours"
  # webhook-delivery on Redis: one replica, then two sharing the outbox.
  for replicas in 1 2; do
    HOOK_PORT=${HOOK_PORT:-18090} bash "$ROOT/bench/webhook_bench.sh" --redis=everysec \
      --replicas=$replicas | tee -a "$ours"
  done
}

if [ "$REPEAT" = 1 ]; then
  round "$OUT/peers.jsonl" "$OUT/switchboard.jsonl"
  python3 "$ROOT/bench/table.py" "$OUT/peers.jsonl" "$OUT/switchboard.jsonl" | tee "$OUT/table.md"
  exit 0
fi
pairs=()
for i in $(seq "$REPEAT"); do
  echo "run_all: round $i of $REPEAT" >&2
  round "$OUT/peers.$i.jsonl" "$OUT/switchboard.$i.jsonl"
  python3 "$ROOT/bench/table.py" "$OUT/peers.$i.jsonl" "$OUT/switchboard.$i.jsonl" >"$OUT/table.$i.md"
  pairs+=("$OUT/peers.$i.jsonl" "$OUT/switchboard.$i.jsonl")
done
python3 "$ROOT/bench/table.py" --repeat "${pairs[@]}" | tee "$OUT/table.md"
