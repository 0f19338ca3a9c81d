#!/usr/bin/env bash
# Installs what the router, its lab and its tests need on Debian 12, as root:
# Debian packages, then a virtualenv in .venv with the package (compiled C
# data plane included) and its test tools.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(iproute2 iputils-ping curl iperf3 nftables procps ethtool coturn tshark podman runc debootstrap uidmap gcc clang libclang-rt-14-dev
      python3 python3-venv python3-dev libpython3-dev)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's Python, so that the venv also works for unprivileged users.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip setuptools wheel &&
       .venv/bin/python -m pip install -q -e ".[test]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed" >&2
    exit 1
fi
rm -f "$log"
.venv/bin/python -c "import router.datapath" || { echo "setup: the package did not build" >&2; exit 1; }
echo "setup: ok ($(.venv/bin/router version))"
