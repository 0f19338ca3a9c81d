#!/bin/sh
# udhcpc's script for an attached WAN interface with address = "dhcp"
# (router/wan.py runs the client): puts the lease's address and default route
# on the interface, in the router's network namespace, and nothing else (no
# resolv.conf, no hostname).  udhcpc gives the lease in its environment:
# $interface, $ip, $mask (a prefix length) and $router (gateways, first one
# used).  The router follows the address through netlink.
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
    ;;
esac
exit 0
