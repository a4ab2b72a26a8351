#!/usr/bin/env bash
# Configures and builds into build/ (Release, Ninja, ccache when present).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$ROOT/build" -j "${JOBS:-2}"
