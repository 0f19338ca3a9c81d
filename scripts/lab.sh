#!/usr/bin/env bash
# The lab: a LAN host and a WAN server as network namespaces, the router
# between them on two TUN devices with the default config (conf/router.toml).
# Shows ping and an HTTP fetch going through the NAT and prints the conntrack
# table.  On a terminal it then keeps the lab up until Ctrl-C; with --once (or
# without a terminal) it stops right away.  Everything it made is removed:
# the namespaces, and a work directory that holds the router's control
# socket, state file and key (so no flow of one lab reappears in the next)
# and its log, which is shown before it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

LAN=rtlab-lan
WAN=rtlab-wan
SERVER=203.0.113.10
WORK=$(mktemp -d /tmp/rtlab.XXXXXX)
ROUTER_PID=""
HTTP_PID=""

cleanup() {
    [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null || true
    if [ -n "$ROUTER_PID" ] && kill -0 "$ROUTER_PID" 2>/dev/null; then
        kill -TERM "$ROUTER_PID"
        wait "$ROUTER_PID" 2>/dev/null || true
    fi
    if [ -s "$WORK/router.log" ]; then
        echo "== the router's log (removed with the lab)"
        tail -n 20 "$WORK/router.log"
    fi
    ip netns del "$LAN" 2>/dev/null || true
    ip netns del "$WAN" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$LAN" "$WAN"; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

# The default config, with the paths the router writes moved into $WORK.
SOCK="$WORK/router.sock"
sed -e "s#\"/run/router/router.sock\"#\"$SOCK\"#" \
    -e "s#\"/var/lib/router/state/conntrack.json\"#\"$WORK/state/conntrack.json\"#" \
    -e "s#\"/var/lib/router/state.key\"#\"$WORK/state.key\"#" conf/router.toml >"$WORK/router.toml"
export ROUTER_SOCKET="$SOCK"  # routerctl's socket

echo "== starting the router with the default config (conf/router.toml)"
.venv/bin/router run -c "$WORK/router.toml" >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
for _ in $(seq 100); do
    [ -S "$SOCK" ] && break
    kill -0 "$ROUTER_PID" 2>/dev/null || exit 1
    sleep 0.1
done
.venv/bin/routerctl interfaces

mkdir -p "$WORK/www"
echo "Hello from the WAN server, through the userspace NAT router." >"$WORK/www/index.html"
ip netns exec "$WAN" .venv/bin/python -m http.server 80 --bind "$SERVER" \
    --directory "$WORK/www" >/dev/null 2>&1 &
HTTP_PID=$!
for _ in $(seq 50); do
    ip netns exec "$WAN" bash -c "exec 3<>/dev/tcp/$SERVER/80" 2>/dev/null && break
    sleep 0.1
done

echo
echo "== ping from the LAN host (192.168.77.2) to the WAN server ($SERVER)"
ip netns exec "$LAN" ping -c 3 -i 0.2 "$SERVER"
echo
echo "== ping over IPv6 from the LAN host (2001:db8:77::2) to the WAN server (2001:db8:113::10)"
ip netns exec "$LAN" ping -6 -c 3 -i 0.2 2001:db8:113::10
echo
echo "== HTTP from the LAN host"
ip netns exec "$LAN" curl -sS -m 5 "http://$SERVER/"
echo
echo "== the connection tracking table (routerctl conntrack list)"
.venv/bin/routerctl conntrack list
echo

if [ -t 0 ] && [ "${1:-}" != "--once" ]; then
    cat <<EOT
The lab is up.  In another shell, try:
    ip netns exec $LAN curl http://$SERVER/
    ip netns exec $LAN ping $SERVER
    .venv/bin/routerctl -S $SOCK conntrack list
    .venv/bin/routerctl -S $SOCK stats
The router's log: $WORK/router.log (shown and removed when the lab stops).
Press Ctrl-C to stop the router and remove the lab.
EOT
    wait "$ROUTER_PID" || true
fi
