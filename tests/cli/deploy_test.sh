#!/usr/bin/env bash
# Deployment files stay consistent: the Dockerfile installs exactly the
# package list that scripts/install-deps.sh (the README's install step) reads,
# the image's binaries are the ones the build makes, and the YAML is clean.
source "$(dirname "$0")/lib.sh"
D="$ROOT/deploy"
grep -q 'COPY deploy/debian-packages.txt' "$D/Dockerfile" || fail "Dockerfile does not use the package list"
grep -q "debian-packages.txt" "$ROOT/scripts/install-deps.sh" || fail "install-deps.sh does not use the package list"
grep -q 'xargs apt-get install' "$D/Dockerfile" || fail "Dockerfile does not install the package list"
grep -q 'scripts/install-deps.sh' "$ROOT/README.md" || fail "README does not name the install step"
for bin in event-broker job-worker webhook-delivery webhook-receiver; do
  grep -q "/$bin /usr/local/bin/" "$D/Dockerfile" || fail "Dockerfile does not ship $bin"
  grep -q "\"$bin\"" "$D/docker-compose.yml" || [ "$bin" = webhook-receiver ] || fail "compose does not run $bin"
done
grep -q '^USER 10001' "$D/Dockerfile" || fail "the image must run as non-root"
if command -v yamllint >/dev/null; then
  (cd "$ROOT" && yamllint deploy/) || fail "yamllint"
fi
echo "1 passed, 0 failed"
