#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is missing,
# builds, and runs every CTest test (unit, integration with the real binaries,
# outside clients, promtool).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh"
cd "$ROOT/build"
ctest --output-on-failure --timeout 600 -j "${TEST_JOBS:-2}"
