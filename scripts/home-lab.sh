#!/bin/bash
# A simulated home, built from network namespaces and bridges, with the
# router attached to it as a real gateway is: a LAN switch with two
# machines that take their addresses from the router (DHCP, SLAAC), and an
# ISP that hands the router its WAN address by DHCP and serves DNS and a web
# page.  Everything lives in namespaces named NAME-*; nothing touches the
# host's own network.
#
#   scripts/home-lab.sh [run]   build the home, run the router on it
#                               (conf/home.toml) in the foreground; Ctrl-C
#                               stops it and removes everything
#   scripts/home-lab.sh up      build the home (the ISP's services running)
#   scripts/home-lab.sh clients start the LAN machines' DHCP clients
#   scripts/home-lab.sh config  print conf/home.toml as the lab runs it
#   scripts/home-lab.sh down    stop what up and clients started, remove it all
#
# Options (before the command): --macvlan attaches the router through
# macvlan interfaces instead of veth; --podman runs the router's container
# image (scripts/container.sh build) on two podman macvlan networks,
# NAME-isp and NAME-lan, whose parents are veths in this machine's namespace
# (NAME-isp, NAME-lan) cabled to the switches, as docs/deployment.md does it
# with real NICs; --name NAME (default rthome); --work DIR (default
# /tmp/NAME), where the processes' ids and logs are kept.
#
#   scripts/home-lab.sh --podman container   (after up) start the router's
#                               container, NAME-router, detached
#
# Namespaces: NAME-sw holds the two switches (bridges: lan, isp); NAME-rtr
# is the router's, with eth0 (WAN, on the ISP switch) and eth1 (LAN);
# NAME-isp is the ISP (198.51.100.1, 2001:db8:100::1: DHCP, DNS, a route
# to the home's IPv6 prefix, and www.isp.example at .80 / ::80); NAME-c1
# and NAME-c2 are the LAN's machines.  In a machine, /etc/resolv.conf is
# what its DHCP lease says (ip netns exec NAME-c1 curl http://www.isp.example/).
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
NAME=rthome
MODE=veth
WORK=
while [ $# -gt 0 ]; do
    case "$1" in
    --macvlan) MODE=macvlan; shift ;;
    --podman) MODE=podman; shift ;;
    --name) NAME=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) break ;;
    esac
done
CMD=${1:-run}
WORK=${WORK:-/tmp/$NAME}
SW=$NAME-sw RTR=$NAME-rtr ISP=$NAME-isp CLIENTS="$NAME-c1 $NAME-c2"
PODMAN=(podman --runtime runc)
IMAGE=${IMAGE:-localhost/tun-router:latest}

log() { echo "home-lab: $*" >&2; }
# Starts a process in the background and remembers its id for "down".
spawn() {
    local tag=$1; shift
    "$@" >"$WORK/$tag.log" 2>&1 &
    echo $! >"$WORK/$tag.pid"
}

# Two ends of a cable: veth NAME in namespace NS, its peer on switch BRIDGE.
plug() {
    local ns=$1 dev=$2 bridge=$3 port=$4
    ip link add "$dev" netns "$ns" type veth peer name "$port" netns "$SW"
    ip -n "$SW" link set "$port" master "$bridge" up
    ip -n "$ns" link set "$dev" up
}

# The router's NIC DEV on BRIDGE: a veth, or a macvlan on a cable to it;
# for the container, a podman macvlan network NAME-BRIDGE on a cable from
# this machine's namespace (the parent a real NIC would be).
router_nic() {
    local dev=$1 bridge=$2
    if [ "$MODE" = podman ]; then
        ip link add "$NAME-$bridge" type veth peer name "p-$bridge" netns "$SW"
        ip -n "$SW" link set "p-$bridge" master "$bridge" up
        # The parent is this machine's, which must take nothing from the
        # home (no address, no route from its router advertisements).
        sysctl -qw "net.ipv6.conf.$NAME-$bridge.disable_ipv6=1"
        ip link set "$NAME-$bridge" up
        "${PODMAN[@]}" network create -d macvlan -o parent="$NAME-$bridge" \
            --ipam-driver none "$NAME-$bridge" >/dev/null
    elif [ "$MODE" = veth ]; then
        plug "$RTR" "$dev" "$bridge" "r-$dev"
    else
        ip -n "$SW" link add "up-$dev" type veth peer name "r-$dev"
        ip -n "$SW" link set "r-$dev" master "$bridge" up
        ip -n "$SW" link set "up-$dev" up
        ip -n "$SW" link add "$dev" link "up-$dev" type macvlan mode bridge
        ip -n "$SW" link set "$dev" netns "$RTR"
    fi
}

up() {
    mkdir -p "$WORK"
    local router_ns=$RTR
    [ "$MODE" != podman ] || router_ns=
    for ns in "$SW" $router_ns "$ISP" $CLIENTS; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    # A switch has no IP of its own (its ports would send router
    # solicitations and answer nothing).
    ip netns exec "$SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
    for br in lan isp; do
        # No multicast snooping: router advertisements and neighbour
        # discovery reach every port at once.
        ip -n "$SW" link add "$br" type bridge mcast_snooping 0
        ip -n "$SW" link set "$br" up
    done
    router_nic eth0 isp
    router_nic eth1 lan
    plug "$ISP" isp0 isp isp-isp
    ip -n "$ISP" addr add 198.51.100.1/24 dev isp0
    ip -n "$ISP" addr add 198.51.100.80/24 dev isp0
    ip -n "$ISP" addr add 2001:db8:100::1/64 dev isp0 nodad
    ip -n "$ISP" addr add 2001:db8:100::80/64 dev isp0 nodad
    # The home's IPv6 prefix is routed to the router's WAN address.
    ip -n "$ISP" -6 route add 2001:db8:1::/64 via 2001:db8:100::2
    local n=1
    for c in $CLIENTS; do
        plug "$c" eth0 lan "c$n"
        mkdir -p "/etc/netns/$c"
        : >"/etc/netns/$c/resolv.conf"
        n=$((n + 1))
    done
    # The ISP: DHCP for the router's WAN, DNS with the web server's name.
    spawn isp-dnsmasq ip netns exec "$ISP" dnsmasq --keep-in-foreground --conf-file=/dev/null \
        --pid-file= --log-facility=- --no-hosts --no-resolv --interface=isp0 --bind-interfaces \
        --dhcp-authoritative --dhcp-range=198.51.100.100,198.51.100.149,255.255.255.0,2m \
        --dhcp-option=option:router,198.51.100.1 --dhcp-option=option:dns-server,198.51.100.1 \
        --dhcp-leasefile="$WORK/isp.leases" --log-dhcp \
        --address=/www.isp.example/198.51.100.80 --address=/www.isp.example/2001:db8:100::80
    spawn isp-web ip netns exec "$ISP" python3 "$HERE/scripts/home-web.py" 80
    # Link-local addresses settle (duplicate address detection) before
    # anyone looks at them.
    for _ in $(seq 50); do
        busy=
        for ns in $router_ns "$ISP" $CLIENTS; do
            [ -z "$(ip -n "$ns" -6 addr show tentative)" ] || busy=1
        done
        [ -n "$busy" ] || break
        sleep 0.1
    done
    log "up: namespaces $SW $RTR $ISP $CLIENTS ($MODE); work directory $WORK"
}

clients() {
    for c in $CLIENTS; do
        # The router's own udhcpc script: address, default route and the
        # lease's DNS servers, here into the machine's resolv.conf.
        spawn "dhcp-$c" ip netns exec "$c" env ROUTER_RESOLV="/etc/netns/$c/resolv.conf" \
            udhcpc -f -i eth0 -s "$HERE/router/udhcpc.sh" -x "hostname:$c" -t 10 -A 2
    done
}

# The router's container on the two macvlan networks: eth0 the ISP's,
# eth1 the LAN's, as conf/home.toml has them; root in the container (the
# LAN services need it) with the capabilities attaching needs.
container() {
    config >"$WORK/router.toml"
    chmod 0644 "$WORK/router.toml"
    bash "$HERE/scripts/container.sh" seccomp >"$WORK/seccomp.json"
    "${PODMAN[@]}" run "$@" --name "$NAME-router" --security-opt "seccomp=$WORK/seccomp.json" \
        --network "$NAME-isp:interface_name=eth0" --network "$NAME-lan:interface_name=eth1" \
        --cap-add=NET_ADMIN,NET_RAW,BPF --device /dev/net/tun \
        --sysctl net.ipv6.conf.eth1.forwarding=1 \
        --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
        -v "$WORK/router.toml:/etc/router/router.toml:ro" "$IMAGE"
}

down() {
    if [ "$MODE" = podman ]; then
        "${PODMAN[@]}" rm -f -t 5 "$NAME-router" >/dev/null 2>&1 || true
        for br in isp lan; do
            "${PODMAN[@]}" network rm "$NAME-$br" >/dev/null 2>&1 || true
            ip link del "$NAME-$br" 2>/dev/null || true
        done
    fi
    for f in "$WORK"/*.pid; do
        [ -e "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    sleep 0.2
    for ns in $CLIENTS "$ISP" "$RTR" "$SW"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    for c in $CLIENTS; do
        rm -rf "/etc/netns/$c"
    done
    rmdir /etc/netns 2>/dev/null || true  # if up made it
}

# conf/home.toml with its paths in the work directory (in the container:
# the image's own), and the ISP's domain allowed its documentation
# addresses (which the LAN's DNS forwarder otherwise drops as private: DNS
# rebinding protection).
config() {
    local paths=(-e "s|/run/router/|$WORK/|" -e "s|/var/lib/router/|$WORK/|")
    [ "$MODE" != podman ] || paths=()
    sed "${paths[@]}" -e 's|^rebind_ok = \[\]|rebind_ok = ["isp.example"]|' \
        "$HERE/conf/home.toml"
}

run() {
    trap 'down; rm -rf "$WORK"' EXIT
    up
    clients
    log "try: ip netns exec $NAME-c1 curl http://www.isp.example/"
    if [ "$MODE" = podman ]; then
        log "in another shell: podman exec $NAME-router routerctl conntrack list"
        container --rm || true
    else
        config >"$WORK/router.toml"
        log "in another shell: $HERE/.venv/bin/routerctl -S $WORK/router.sock conntrack list"
        ip netns exec "$RTR" "$HERE/.venv/bin/router" run -c "$WORK/router.toml" || true
    fi
}

case "$CMD" in
run | up | clients | down | config) "$CMD" ;;
container) container -d ;;
*) echo "usage: $0 [--macvlan|--podman] [--name NAME] [--work DIR]" \
        "[run|up|clients|container|config|down]" >&2
   exit 2 ;;
esac
