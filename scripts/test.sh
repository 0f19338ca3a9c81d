#!/usr/bin/env bash
# Sets up everything and runs the whole test suite, as root on Debian 12:
#   lint (ruff) and types (mypy), all tests (C core through cffi, Python units,
#   end to end in network namespaces), then the C core tests again on a build
#   with AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

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

echo "== fuzz smoke: the C batch path (libFuzzer, ASan, UBSan), config and control (atheris)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
