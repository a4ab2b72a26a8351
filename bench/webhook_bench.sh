#!/usr/bin/env bash
# Webhook figures beside the raw HTTP limit: starts nginx answering 204 on
# POST /hook (the set-up of ../shared/peers/http_limit.sh) on $HOOK_PORT, runs
# build/bench/webhook_bench against it, stops nginx. JSON lines on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${HOOK_PORT:-18090}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
T=$(mktemp -d /tmp/sb-hook-bench.XXXXXX)
cleanup() { [ -f "$T/nginx.pid" ] && kill -QUIT "$(cat "$T/nginx.pid")" 2>/dev/null; sleep 0.3; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T/tmp"
cat >"$T/nginx.conf" <<CONF
worker_processes auto;
pid $T/nginx.pid;
error_log $T/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $T/tmp/body; proxy_temp_path $T/tmp/proxy; fastcgi_temp_path $T/tmp/fcgi;
  uwsgi_temp_path $T/tmp/uwsgi; scgi_temp_path $T/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location = /hook { client_body_buffer_size 16k; return 204; }
    location / { return 404; }
  }
}
CONF
"$NGINX" -p "$T/" -c "$T/nginx.conf" -e "$T/error.log"
for _ in $(seq 100); do ss -Htln "sport = :$PORT" | grep -q . && break; sleep 0.05; done
"$ROOT/build/bench/webhook_bench" --url="http://127.0.0.1:$PORT/hook" "$@"
