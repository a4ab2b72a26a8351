#!/usr/bin/env bash
# An outside client over mTLS with a bearer token, as the README shows:
# certificates made with the openssl CLI, buf curl with --cacert/--cert/--key
# and an authorization header against the broker's gRPC port, curl against
# its HTTPS admin port; without a client certificate, or without the token,
# they are refused.
source "$(dirname "$0")/lib.sh"
BROKER_BIN=$1
[ -x "$BUF" ] || fail "buf is not installed (scripts/install-deps.sh installs it)"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout ca.key -out ca.pem -subj /CN=switchboard-ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > ext
for who in broker client; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out $who.pem -extfile ext 2>/dev/null
done
TOKEN=cli-token-5f2e
printf '{"principal":"cli","token_sha256":"%s","scopes":["publish:order.*","subscribe:order.*"]}\n' \
  "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" > tokens.jsonl
start_service BROKER "$BROKER_BIN" --data_dir="$WORK/data" --tls_cert=broker.pem \
  --tls_key=broker.key --tls_client_ca=ca.pem --auth_tokens_file=tokens.jsonl
G="https://$BROKER_GRPC"
TLS=(--cacert ca.pem --cert client.pem --key client.key)
AUTH=(-H "authorization: Bearer $TOKEN")

out=$("$BUF" curl "${TLS[@]}" "${AUTH[@]}" --protocol grpc --reflect-protocol grpc-v1alpha \
  -d '{"event":{"type":"order.created","source":"shell","correlationId":"tls-1"}}' \
  "$G/switchboard.broker.v1.EventBroker/Publish")
grep -q '"sequence": "1"' <<<"$out" || fail "publish over mTLS: $out"
out=$(curl -sS "${TLS[@]}" "${AUTH[@]}" "https://$BROKER_HTTP/api/events/history?correlation_id=tls-1")
grep -q 'order.created' <<<"$out" || fail "history over HTTPS: $out"

set +e
out=$("$BUF" curl "${TLS[@]}" --protocol grpc --reflect-protocol grpc-v1alpha \
  -d '{"event":{"type":"order.created","source":"shell"}}' \
  "$G/switchboard.broker.v1.EventBroker/Publish" 2>&1)
set -e
grep -q 'unauthenticated' <<<"$out" || fail "buf curl without a token: $out"
code=$(curl -sS -o /dev/null -w '%{http_code}' "${TLS[@]}" "https://$BROKER_HTTP/api/events/stats")
[ "$code" = 401 ] || fail "HTTPS without a token: $code"
set +e
out=$("$BUF" curl --cacert ca.pem "${AUTH[@]}" --protocol grpc --reflect-protocol grpc-v1alpha \
  -d '{"event":{"type":"order.created","source":"shell"}}' \
  "$G/switchboard.broker.v1.EventBroker/Publish" 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] || fail "buf curl without a client certificate was served: $out"
set +e
plain=$("$BUF" curl --protocol grpc --http2-prior-knowledge --reflect-protocol grpc-v1alpha \
  -d '{"event":{"type":"order.created","source":"shell"}}' \
  "http://$BROKER_GRPC/switchboard.broker.v1.EventBroker/Publish" 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] || fail "plain text was served: $plain"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert ca.pem "https://$BROKER_HTTP/healthz" 2>/dev/null || true)
[ "$code" != "200" ] || fail "HTTPS without a client certificate was served"
echo "1 passed, 0 failed"
