#!/usr/bin/env bash
# The broker on Redis against raw Redis, interleaved: each round runs the
# peers' redis_bench (pipelined XADD, XREADGROUP+XACK drain) and right after it
# broker_bench --redis=<fsync> --only=batch,drain, so both figures of a round
# see the same machine. The raw figures of this box move by up to 1.8x between
# minutes; a ratio across two separate runs says little. Prints each round's
# ratios and their median per figure and fsync policy.
#   bash bench/redis_vs_raw.sh [rounds=3]        raw JSON in $OUT (/tmp/switchboard-bench)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/peers}
ROUNDS=${1:-3}
OUT=${OUT:-/tmp/switchboard-bench}
mkdir -p "$OUT"
[ -x "$ROOT/build/bench/broker_bench" ] || bash "$ROOT/scripts/build.sh"
T=$(mktemp -d /tmp/redis-vs-raw.XXXXXX)
RPID=""
cleanup() {
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
gcc -O2 -o "$T/redis_bench" "$PEERS/redis_bench.c" -lhiredis -lpthread
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RESULTS="$OUT/redis-vs-raw.jsonl"
: > "$RESULTS"
for fsync in everysec always; do
  mkdir -p "$T/redis-$fsync"
  redis-server --port "$PORT" --bind 127.0.0.1 --dir "$T/redis-$fsync" --daemonize no \
    --appendonly yes --appendfsync "$fsync" --save '' --auto-aof-rewrite-percentage 0 \
    --logfile "$T/redis-$fsync.log" &
  RPID=$!
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  for round in $(seq "$ROUNDS"); do
    redis-cli -p "$PORT" FLUSHALL >/dev/null
    "$T/redis_bench" -p "$PORT" -f "$fsync" -o pipe,drain -c 40 |
      sed "s/^{/{\"round\":$round,/" >> "$RESULTS"
    "$ROOT/build/bench/broker_bench" --redis="$fsync" --only=batch,drain |
      sed "s/^{/{\"round\":$round,/" >> "$RESULTS"
  done
  kill "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=""
done
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
pairs = [('batched publish', 'publish_batch_100', 'redis_xadd_pipelined'),
         ('group drain with acks', 'group_drain_ack', 'redis_xreadgroup_xack_drain')]
print('| figure | fsync | rounds: ours / raw = ratio | median ratio | target |')
print('|---|---|---|---|---|')
for fsync in ('everysec', 'always'):
    for name, ours, raw in pairs:
        ratios, cells = [], []
        for r in sorted({x['round'] for x in rows}):
            o = [x for x in rows if x['round'] == r and x.get('figure') == ours and x.get('appendfsync') == fsync]
            w = [x for x in rows if x['round'] == r and x.get('figure') == raw and x.get('appendfsync') == fsync]
            if o and w:
                ratio = o[0]['msgs_per_s'] / w[0]['msgs_per_s']
                ratios.append(ratio)
                cells.append('%d / %d = %.2f×' % (o[0]['msgs_per_s'], w[0]['msgs_per_s'], ratio))
        med = '%.2f×' % statistics.median(ratios) if ratios else 'n/a'
        print('| %s | %s | %s | %s | ≥ 0.5× |' % (name, fsync, '; '.join(cells), med))
EOF
