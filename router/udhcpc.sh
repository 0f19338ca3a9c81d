#!/bin/sh
# udhcpc's script for an attached WAN interface with address = "dhcp"
# (router/wan.py runs the client): puts the lease's address and default route
# on the interface, in the router's network namespace, and the lease's DNS
# servers in $ROUTER_RESOLV (where the router reads them for the LAN's DNS
# forwarder, dnsmasq), and nothing else (no /etc/resolv.conf, no hostname).  udhcpc
# gives the lease in its environment: $interface, $ip, $mask (a prefix
# length), $router (gateways, first one used) and $dns.  The router follows
# the address through netlink.
set -e
case "$1" in
deconfig | leasefail | nak)
    ip -4 addr flush dev "$interface" scope global
    ;;
bound | renew)
    old=$(ip -4 -o addr show dev "$interface" scope global | awk '{print $4}')
    if [ "$old" != "$ip/$mask" ]; then
        ip -4 addr flush dev "$interface" scope global
        ip addr add "$ip/$mask" dev "$interface"
    fi
    if [ -n "$router" ]; then
        ip route replace default via "${router%% *}" dev "$interface" proto dhcp
    fi
    if [ -n "$ROUTER_RESOLV" ]; then
        # Written whole, then renamed: the router never reads half a file.
        : >"$ROUTER_RESOLV.new"
        for server in $dns; do
            echo "nameserver $server" >>"$ROUTER_RESOLV.new"
        done
        mv -f "$ROUTER_RESOLV.new" "$ROUTER_RESOLV"
    fi
    ;;
esac
exit 0
