#!/usr/bin/env bash
# Installs what the router and its lab need on Debian 12, as root: Debian
# packages, then a virtualenv in .venv with the package (the C data plane
# compiled).  With --test, also what the test suite and benchmarks need: the
# traffic and inspection tools, podman for the container test, the fuzzing
# compilers and the Python test tools.  Safe to run again.
#
# Nothing it installs starts a service on the host: packages that would
# (coturn's STUN/TURN server, used by the tests as a program) are installed
# with service starts refused, and left disabled.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
[ "${1:-}" = "--test" ] && TEST=1

# The lab: namespaces, ping and curl, and what builds the C data plane; the
# DHCP client of a WAN interface with address = "dhcp"; dnsmasq (its -base
# package: no service) for the LAN services of [interface.lan]; libpcap compiles
# the tcpdump filters of routerctl capture (the data plane links it).
PKGS=(iproute2 iputils-ping curl gcc python3 python3-venv python3-dev libpython3-dev udhcpc
      dnsmasq-base libpcap-dev)
# The tests and benchmarks.
# natpmpc and miniupnpc: the port mapping tests' clients; miniupnpd-nftables: the
# gateway scripts/portmap-compare.py compares the router with (it ships no service).
# nfdump: nfcapd, the IPFIX collector the flow export tests send to.
TEST_PKGS=(iperf3 nftables procps ethtool coturn tshark tcpdump podman runc debootstrap uidmap clang
           libclang-rt-14-dev natpmpc miniupnpc miniupnpd-nftables keepalived conntrackd conntrack
           nfdump)
# Packages that ship a service enabled by default: the tests run the program
# themselves, so the service stays off.
SERVICES=(coturn keepalived conntrackd nfdump)

want=("${PKGS[@]}")
((TEST)) && want+=("${TEST_PKGS[@]}")
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # policy-rc.d (Debian's hook for package scripts) refuses every service
    # start while the packages are installed; ours only if none is there.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
        [ -n "$policy" ] && rm -f "$policy"
        echo "setup: apt-get install failed" >&2
        exit 1
    fi
    [ -n "$policy" ] && rm -f "$policy"
fi
for s in "${SERVICES[@]}"; do
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ] &&
       systemctl is-enabled --quiet "$s" 2>/dev/null; then
        echo "setup: disabling the $s service the package enabled (the tests run it themselves)"
        systemctl disable --now --quiet "$s"
    fi
done

# Debian's Python, so that the venv also works for unprivileged users.
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating the virtualenv .venv"
    /usr/bin/python3 -m venv .venv
fi
extra=""
((TEST)) && extra="[test]"
log=$(mktemp)
echo "setup: installing the router into .venv${extra:+ with the test tools} (compiles the C data plane)"
if ! { .venv/bin/python -m pip install -q --upgrade pip setuptools wheel &&
       .venv/bin/python -m pip install -q -e ".$extra"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup: pip install failed" >&2
    exit 1
fi
rm -f "$log"
.venv/bin/python -c "import router.datapath" || { echo "setup: the package did not build" >&2; exit 1; }
echo "setup: ok ($(.venv/bin/router version))"
