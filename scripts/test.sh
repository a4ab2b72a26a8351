#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is missing,
# builds, and runs every CTest test (unit, integration with the real binaries,
# outside clients, promtool, a real Prometheus) on the release build, then the
# unit and integration tests again on a ThreadSanitizer build and on an
# AddressSanitizer+UBSan build (both clang-14 with -Wthread-safety -Werror).
#   SANITIZERS="tsan asan" (default) | "tsan" | "" to run the release suite only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SANITIZERS=${SANITIZERS-tsan asan}
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh" release
cd "$ROOT/build"
ctest --output-on-failure --timeout 600 -j "${TEST_JOBS:-2}"
for flavour in $SANITIZERS; do
  bash "$ROOT/scripts/sanitizer-test.sh" "$flavour"
done
