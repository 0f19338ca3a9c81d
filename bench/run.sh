#!/usr/bin/env bash
# Runs every benchmark: the C core micro-benchmark (no TUN), then the router
# against the kernel's NAT on the same namespace topology (root), with a
# minimal TUN forwarder as the floor of any userspace design (BASELINE=0 to
# leave it out).  Results go to bench/results/DATE-*.json as well as the
# terminal.
#   ROUNDS (3), SECS (5), TESTS (all), ENTRIES (1048576), BASELINE (1),
#   QUEUES (1; e.g. 1,loop,2 runs the router in each data path mode)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "== C core micro-benchmark"
gcc -O2 -Wall -Wextra -Werror -std=gnu11 -pthread -Irouter/native router/native/*.c bench/core_bench.c \
    -lpcap -o build/core_bench
build/core_bench "${ENTRIES:-1048576}" | tee "bench/results/$stamp-core.json"
echo
echo "== router vs kernel NAT"
extra=()
if [ "${BASELINE:-1}" = 1 ]; then
    extra+=(--baseline)
fi
.venv/bin/python bench/nat_bench.py --rounds "${ROUNDS:-3}" --secs "${SECS:-5}" \
    --tests "${TESTS:-tcp1,tcp4,udp64,ping,crr1,crr4,flood}" --out "bench/results/$stamp-nat.json" \
    --queues "${QUEUES:-1}" \
    "${extra[@]}"
