#!/usr/bin/env bash
# Builds the libFuzzer target of the C core's batch path with ASan and UBSan
# and runs it for SECONDS (default 60) from the seed corpus.  Crashes land in
# build/fuzz/; a fixed crash belongs in tests/fuzz/regressions/ for good.
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
