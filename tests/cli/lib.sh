# Helpers for shell tests that drive real binaries as a user would.
# start_service NAME BINARY ARGS... : starts on ephemeral ports, sets
# ${NAME}_GRPC, ${NAME}_HTTP, ${NAME}_PID; the EXIT trap stops everything.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUF="$ROOT/.cache/node/node_modules/.bin/buf"
WORK=$(mktemp -d /tmp/switchboard-cli.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

start_service() {
  local name=$1 bin=$2; shift 2
  local log="$WORK/$name.log"
  "$bin" --grpc_addr=127.0.0.1:0 --http_addr=127.0.0.1:0 "$@" >"$log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    if grep -q 'listening grpc=' "$log"; then
      local line; line=$(grep -o 'listening grpc=[^ ]* http=[^ "]*' "$log" | head -1)
      printf -v "${name}_GRPC" '%s' "$(sed 's/.*grpc=\([^ ]*\).*/\1/' <<<"$line")"
      printf -v "${name}_HTTP" '%s' "$(sed 's/.*http=\([^ ]*\).*/\1/' <<<"$line")"
      printf -v "${name}_PID" '%s' "$pid"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$name exited"; }
    sleep 0.05
  done
  cat "$log" >&2
  fail "$name did not log its ports"
}


# wait_ready HOST:PORT... : each admin port answers /readyz with 200 (20 s each).
wait_ready() {
  local svc
  for svc in "$@"; do
    for _ in $(seq 400); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$svc/readyz")" = 200 ] && continue 2
      sleep 0.05
    done
    fail "$svc is not ready"
  done
}

# wait_listening LOG VAR : waits for "listening http=HOST:PORT" in LOG (a
# helper process started in the background) and sets VAR to HOST:PORT.
wait_listening() {
  local log=$1 var=$2
  for _ in $(seq 200); do
    if grep -q 'listening http=' "$log"; then
      printf -v "$var" '%s' "$(grep -o 'http=[0-9.:]*' "$log" | head -1 | cut -d= -f2)"
      return 0
    fi
    sleep 0.05
  done
  fail "no 'listening http=' in $log: $(cat "$log")"
}
