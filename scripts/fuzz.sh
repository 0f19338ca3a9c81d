#!/usr/bin/env bash
# Builds the libFuzzer target of the C core's batch path with ASan and UBSan
# and runs it for SECONDS (default 60) from the seed corpus, then the atheris
# harnesses of the Python-facing API (config, control requests) for half of
# SECONDS each, and of the port mapping services' parsers for a quarter
# each.  Crashes land in build/fuzz/; a fixed crash belongs in
# tests/fuzz/regressions/ (C) or tests/fuzz/python_corpus/ for good.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
mkdir -p build/fuzz/corpus
clang -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined -Wall -Wextra -Werror -Irouter/native \
      router/native/*.c tests/fuzz/fuzz_batch.c -lpcap -o build/fuzz/fuzz_batch
.venv/bin/python tests/fuzz/make_corpus.py build/fuzz/corpus
if [ -d tests/fuzz/regressions ] && [ -n "$(ls -A tests/fuzz/regressions 2>/dev/null)" ]; then
    build/fuzz/fuzz_batch tests/fuzz/regressions/*
fi
build/fuzz/fuzz_batch -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=build/fuzz/ build/fuzz/corpus 2>&1 | tail -n 12

# The Python-facing API under atheris: config parsing and validation, and
# control socket requests, half the time each; then what LAN hosts send the
# port mapping services (PCP and NAT-PMP datagrams, SOAP bodies, SSDP
# datagrams) and the port mapping state file, a quarter each; then the
# datagrams of the high-availability sync, a quarter.
PY_SECONDS=$(( (SECONDS_TO_RUN + 1) / 2 ))
PM_SECONDS=$(( (SECONDS_TO_RUN + 3) / 4 ))
fuzz_py() {  # harness target corpus seconds
    mkdir -p "build/fuzz/py$3"
    echo "-- atheris: $2, $4 s"
    .venv/bin/python "tests/fuzz/$1" "$2" -max_total_time="$4" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build/fuzz/py-$3-" \
        "build/fuzz/py$3" "tests/fuzz/python_corpus/$3" 2>&1 | tail -n 4
}
for target in config control; do
    fuzz_py fuzz_python.py "$target" "$target" "$PY_SECONDS"
done
for pair in udp:pmudp soap:soap ssdp:ssdp state:pmstate; do
    fuzz_py fuzz_portmap.py "${pair%%:*}" "${pair##*:}" "$PM_SECONDS"
done
# What reaches the high-availability sync port: conntrackd's protocol.
fuzz_py fuzz_ha.py sync hasync "$PM_SECONDS"
