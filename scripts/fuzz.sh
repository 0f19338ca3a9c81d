#!/usr/bin/env bash
# Builds the libFuzzer target of the C core's batch path with ASan and UBSan
# and runs it for SECONDS (default 60) from the seed corpus, then the atheris
# harnesses of the Python-facing API (config, control requests) for half of
# SECONDS each.  Crashes land in build/fuzz/; a fixed crash belongs in
# tests/fuzz/regressions/ (C) or tests/fuzz/python_corpus/ for good.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
mkdir -p build/fuzz/corpus
clang -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined -Wall -Wextra -Werror -Irouter/native \
      router/native/*.c tests/fuzz/fuzz_batch.c -o build/fuzz/fuzz_batch
.venv/bin/python tests/fuzz/make_corpus.py build/fuzz/corpus
if [ -d tests/fuzz/regressions ] && [ -n "$(ls -A tests/fuzz/regressions 2>/dev/null)" ]; then
    build/fuzz/fuzz_batch tests/fuzz/regressions/*
fi
build/fuzz/fuzz_batch -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=build/fuzz/ build/fuzz/corpus 2>&1 | tail -n 12

# The Python-facing API under atheris: config parsing and validation, and
# control socket requests, half the time each.
PY_SECONDS=$(( (SECONDS_TO_RUN + 1) / 2 ))
for target in config control; do
    mkdir -p "build/fuzz/py$target"
    echo "-- atheris: $target, ${PY_SECONDS} s"
    .venv/bin/python tests/fuzz/fuzz_python.py "$target" -max_total_time="$PY_SECONDS" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build/fuzz/py- \
        "build/fuzz/py$target" "tests/fuzz/python_corpus/$target" 2>&1 | tail -n 4
done
