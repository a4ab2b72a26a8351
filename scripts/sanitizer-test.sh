#!/usr/bin/env bash
# Builds one sanitizer flavour (tsan|asan) and runs the unit and integration
# tests on it. Reports from any process (tests and the service binaries they
# start) are written to a log folder; any report fails the run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLAVOUR=$1
bash "$ROOT/scripts/build.sh" "$FLAVOUR"
LOGS="$ROOT/build-$FLAVOUR/sanitizer-logs"
rm -rf "$LOGS"; mkdir -p "$LOGS"
SUPP="$ROOT/scripts/sanitizers"
# ignore_noninstrumented_modules: accesses made inside Debian's uninstrumented
# libraries (gRPC's sockets and buffers) are not ours to check.
export TSAN_OPTIONS="halt_on_error=0 history_size=4 ignore_noninstrumented_modules=1 log_path=$LOGS/tsan suppressions=$SUPP/tsan.supp"
export ASAN_OPTIONS="detect_leaks=0 abort_on_error=0 log_path=$LOGS/asan strict_string_checks=1 detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 log_path=$LOGS/ubsan"
cd "$ROOT/build-$FLAVOUR"
# Outside-client and deployment checks (cli.*) ran on the release build; here
# the C++ tests run against sanitized binaries, with longer deadlines.
status=0
ctest --output-on-failure --timeout 900 -j "${TEST_JOBS:-2}" -E '^cli\.' || status=$?
if compgen -G "$LOGS/*" >/dev/null; then
  echo "== $FLAVOUR: sanitizer reports ==" >&2
  for f in "$LOGS"/*; do echo "--- $f" >&2; head -c 20000 "$f" >&2; done
  status=1
fi
echo "$FLAVOUR suite: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
