#!/usr/bin/env bash
# Sets up everything and runs the whole test suite, as root on Debian 12:
#   lint (ruff) and types (mypy), all tests (C core through cffi, Python units,
#   end to end in network namespaces), then the C core tests again on a build
#   with AddressSanitizer and UndefinedBehaviorSanitizer, and the worker tests
#   with ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test

echo "== lint and types"
.venv/bin/ruff check router tests bench
.venv/bin/mypy

echo "== tests"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

echo "== C core under ASan + UBSan"
rm -rf build/asan
.venv/bin/python -m router.native.build_ffi --sanitize build/asan
RT_NATIVE_PATH="$PWD/build/asan" \
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/native

echo "== worker threads under ThreadSanitizer (the lock against the batches)"
rm -rf build/tsan build/tsan-log
mkdir -p build/tsan-log
.venv/bin/python -m router.native.build_ffi --thread build/tsan
RT_NATIVE_PATH="$PWD/build/tsan" \
LD_PRELOAD="$(gcc -print-file-name=libtsan.so)" \
TSAN_OPTIONS="halt_on_error=1:log_path=$PWD/build/tsan-log/report" \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/native/test_workers.py \
    tests/native/test_poll.py || { cat build/tsan-log/report* 2>/dev/null; exit 1; }

echo "== fuzz smoke: the C batch path (libFuzzer, ASan, UBSan), config and control (atheris)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
