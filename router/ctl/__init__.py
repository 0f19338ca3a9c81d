"""``routerctl``: talk to a running router through its control socket.

    routerctl [-S SOCKET] [--json] conntrack list [conntrack -L's options: -p -s -d -r -q
                     --sport --dport --state -f -u -n -g -j -m -w -o] [--fw-zone ZONE]
    routerctl conntrack get | delete | update -t SECONDS [the same options]
    routerctl conntrack count | flush | stats
    routerctl conntrack events [-e NEW,UPDATES,DESTROY|ALL] [options] [-c N] [--duration S]
    routerctl conntrack -L | -G | -D | -U | -E | -C | -F | -S ...   (conntrack's letters)
    routerctl capture IFACE -w FILE|- [-c N] [-t SECONDS] [-s SNAPLEN] [--pcap] [EXPRESSION]
    routerctl stats | interfaces | routes | status | reload
    routerctl config show
    routerctl nat list
    routerctl lb list
    routerctl firewall list
    routerctl portmap list | events [-t SECONDS]
    routerctl portmap delete PROTO PORT [ADDRESS]
    routerctl ha status | cache | resync | events [-t SECONDS]
    routerctl ha master | backup | fault       (keepalived's notify_master, ...)
    routerctl ha notify TYPE NAME STATE [PRIORITY]   (keepalived's notify)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import toml

from router.conntrack_text import MAPPING_HEADER, mapping_line, stats_line
from router.ctl import capture, conntrack, services
from router.ctl.client import DEFAULT_SOCKET, CtlError, request

__all__ = ["DEFAULT_SOCKET", "main", "parser"]


def _print_kv(d: dict[str, Any], indent: str = "") -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            print(f"{indent}{k}:")
            _print_kv(v, indent + "  ")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            print(f"{indent}{k}:")
            for i, x in enumerate(v):
                print(f"{indent}  {i}: " + " ".join(f"{a} {b}" for a, b in x.items()))
        elif isinstance(v, list) and not v:
            print(f"{indent}{k}: none")
        else:
            print(f"{indent}{k}: {v}")


def _common(top: bool) -> argparse.ArgumentParser:
    """The options every command takes, before its name or after it.  After
    it they default to nothing (SUPPRESS), so that leaving one out there
    does not undo it given before."""
    p = argparse.ArgumentParser(add_help=False)
    socket_default = os.environ.get("ROUTER_SOCKET", DEFAULT_SOCKET) if top else argparse.SUPPRESS
    p.add_argument("-S", "--socket", default=socket_default,
                   help=f"control socket (default {DEFAULT_SOCKET}, or $ROUTER_SOCKET)")
    p.add_argument("--json", action="store_true", help="print JSON",
                   default=False if top else argparse.SUPPRESS)
    return p


def parser() -> argparse.ArgumentParser:
    """routerctl's command line."""
    ap = argparse.ArgumentParser(prog="routerctl", description="Control a running router.",
                                 parents=[_common(top=True)])
    common = [_common(top=False)]
    sub = ap.add_subparsers(dest="cmd", required=True)
    conntrack.add_parsers(sub, common)
    sub.add_parser("stats", help="data plane counters and drops by reason", parents=common)
    sub.add_parser("interfaces", help="interfaces and their counters", parents=common)
    sub.add_parser("routes", help="the routing table, like ip route", parents=common)
    capture.add_parser(sub, common)
    sub.add_parser("status", help="version, uptime, config, table use", parents=common)
    sub.add_parser("reload", help="reload the config file (like SIGHUP) and report",
                   parents=common)
    nat = sub.add_parser("nat", help="NAT mappings", parents=common)
    nat.add_argument("what", choices=["list"], help="list: active mappings and their use")
    fwp = sub.add_parser("firewall", help="firewall rules", parents=common)
    fwp.add_argument("what", choices=["list"], help="list: rules with their counters")
    lbp = sub.add_parser("lb", help="load balancers", parents=common)
    lbp.add_argument("what", choices=["list"], help="list: backends and their connections")
    services.add_parsers(sub, common)
    cfg = sub.add_parser("config", help="the running config", parents=common)
    cfg.add_argument("what", choices=["show"], help="show: print the running config as TOML")
    return ap


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argv = conntrack.letters_to_names(list(sys.argv[1:] if argv is None else argv))
    args, extra = p.parse_known_args(argv)
    if extra and args.cmd != "capture":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.expression = extra
    try:
        if args.cmd == "conntrack":
            return conntrack.run(args)
        if args.cmd == "capture":
            return capture.run(args)
        if args.cmd == "portmap":
            return services.portmap(args)
        if args.cmd == "ha":
            return services.ha(args)
        cmd = {"config": "config.show", "nat": "nat.list", "lb": "lb.list",
               "firewall": "firewall.list"}.get(args.cmd, args.cmd)
        result = request(args.socket, cmd)
    except CtlError as e:
        print(f"routerctl: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    elif cmd == "interfaces":
        for i in result:
            print(f"{i['name']}: zone {i['zone']} address {i['address']}"
                  + (f" address6 {i['address6']}" if i.get("address6") else "")
                  + f" mtu {i['mtu']}" + (f" netns {i['netns']}" if i["netns"] else ""))
            print(f"    rx {i['rx_packets']} packets {i['rx_bytes']} bytes "
                  f"{i['rx_dropped']} dropped")
            print(f"    tx {i['tx_packets']} packets {i['tx_bytes']} bytes "
                  f"{i['tx_errors']} errors")
    elif cmd == "routes":
        for r in result:
            line = r["destination"]
            if r["gateway"]:
                line += f" via {r['gateway']}"
            line += f" dev {r['interface']} proto {r['proto']}"
            if r["src"]:
                line += f" scope link src {r['src']}"
            print(line)
    elif cmd == "nat.list":
        print(MAPPING_HEADER)
        for m in result:
            print(mapping_line(m))
    elif cmd == "firewall.list":
        print(f"forward: new connections between zones without a policy: {result['forward']}")
        for p in result["policies"]:
            print(f"  policy {p['from']} -> {p['to']}: {p['action']}")
        print(f"input: packets for the router without a matching rule: {result['input']}")
        for r in result["rules"]:
            match = " ".join(f"{k}={v}" for k, v in r.items()
                             if k not in ("number", "chain", "action", "packets", "bytes",
                                          "comment"))
            print(f"{r['number']:>3} {r['chain']:<7} {r['action']:<6} {r['packets']:>10} pkts "
                  f"{r['bytes']:>12} bytes  {match}"
                  + (f"  # {r['comment']}" if r.get("comment") else ""))
    elif cmd == "lb.list":
        for lb in result:
            print(f"{lb['name']}: {lb['protocol']} {lb['address']}:{lb['port']}"
                  + (" (full NAT)" if lb["masquerade"] else ""))
            for b in lb["backends"]:
                print(f"    {b['address']}:{b['port']:<6} weight {b['weight']:<3} "
                      f"{b['connections']} connections")
    elif cmd == "config.show":
        print(f"# running config, read from {result['path']} (sha256 {result['sha256'][:16]})")
        print(toml.dumps(result["config"]), end="")
    elif cmd == "stats":
        c = result["counters"]
        print(stats_line(c))
        _print_kv({"counters": c, "drops": {k: v for k, v in result["drops"].items() if v}})
    else:
        _print_kv(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
