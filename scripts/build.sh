#!/usr/bin/env bash
# Configures and builds one flavour of the tree (Ninja, ccache when present):
#   scripts/build.sh          release build into build/ (gcc, -O3)
#   scripts/build.sh tsan     clang-14, ThreadSanitizer, -Wthread-safety -Werror, into build-tsan/
#   scripts/build.sh asan     clang-14, AddressSanitizer + UBSan, -Wthread-safety -Werror, into build-asan/
# The sanitizer flavours leave out the load generators in bench/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLAVOUR=${1:-release}
# Cache hits across clones in other folders (CI builds a fresh clone).
export CCACHE_BASEDIR="$ROOT"
export CCACHE_NOHASHDIR=1
case "$FLAVOUR" in
  release)
    cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$ROOT/build" -j "${JOBS:-2}"
    ;;
  tsan|asan)
    san=thread; [ "$FLAVOUR" = asan ] && san=address
    cmake -S "$ROOT" -B "$ROOT/build-$FLAVOUR" -G Ninja -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_FLAGS=-O1 \
      -DSWITCHBOARD_SANITIZER=$san -DSWITCHBOARD_BUILD_BENCH=OFF >/dev/null
    cmake --build "$ROOT/build-$FLAVOUR" -j "${JOBS:-2}"
    ;;
  *)
    echo "usage: scripts/build.sh [release|tsan|asan]" >&2
    exit 2
    ;;
esac
