"""``routerctl portmap`` and ``routerctl ha``: the port mapping service and
the high-availability pair."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from router.conntrack_text import entry_line
from router.ctl.client import request, stream


def add_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    pm = sub.add_parser("portmap", help="mappings LAN hosts asked for (PCP, NAT-PMP, UPnP)",
                        parents=common)
    pmsub = pm.add_subparsers(dest="pmcmd", required=True)
    pmsub.add_parser("list", help="the mappings, with protocol, client and lifetime left",
                     parents=common)
    pmd = pmsub.add_parser("delete", help="end one mapping", parents=common)
    pmd.add_argument("protocol", choices=["tcp", "udp"])
    pmd.add_argument("port", type=int, help="its external port (IPv6 pinhole: inside port)")
    pmd.add_argument("address", nargs="?", help="a pinhole's inside IPv6 address")
    pme = pmsub.add_parser("events", help="stream grants, refusals, expiries, deletions",
                           parents=common)
    pme.add_argument("-t", "--timeout", type=float, default=0,
                     help="stop after this many seconds (default: never)")
    hap = sub.add_parser("ha", help="high availability: the pair's role and sync",
                         parents=common)
    hasub = hap.add_subparsers(dest="hacmd", required=True)
    hasub.add_parser("status", help="role, peer, sync lag, messages, caches", parents=common)
    hasub.add_parser("cache", help="the peer's connections, as conntrackd -e lists them",
                     parents=common)
    hasub.add_parser("resync", help="ask the peer for its whole table", parents=common)
    for state in ("master", "backup", "fault"):
        hasub.add_parser(state, help=f"keepalived's {state.upper()}: "
                         + ("commit the peer's connections and forward"
                            if state == "master" else "stand by"), parents=common)
    han = hasub.add_parser("notify", help="keepalived's generic notify: TYPE NAME STATE "
                           "[PRIORITY]", parents=common)
    han.add_argument("type")
    han.add_argument("name")
    han.add_argument("state")
    han.add_argument("priority", nargs="?")
    hae = hasub.add_parser("events", help="stream role changes, commits, resyncs",
                           parents=common)
    hae.add_argument("-t", "--timeout", type=float, default=0,
                     help="stop after this many seconds (default: never)")


def _json_events(args: argparse.Namespace, command: str) -> int:
    msgs = stream(args.socket, command, {},
                  idle=max(0.1, args.timeout) if args.timeout > 0 else 3600.0)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    try:
        for msg in msgs:
            print(json.dumps(msg), flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        msgs.close()
    return 0


def ha(args: argparse.Namespace) -> int:
    if args.hacmd == "events":
        return _json_events(args, "ha.events")
    if args.hacmd in ("master", "backup", "fault", "notify"):
        state = args.state if args.hacmd == "notify" else args.hacmd
        if args.hacmd == "notify" and args.type.upper() != "INSTANCE":
            return 0  # a sync group's or the daemon's notice: the instance's comes too
        r = request(args.socket, "ha.role", {"state": state.lower()})
        print(json.dumps(r, indent=2) if args.json else f"routerctl: {r['role']}"
              + (f", committed {r['commit'].get('committed', 0)} connections"
                 if r.get("commit") else ""))
        return 0
    if args.hacmd == "resync":
        request(args.socket, "ha.resync")
        print("routerctl: asked the peer for its table", file=sys.stderr)
        return 0
    if args.hacmd == "cache":
        r = request(args.socket, "ha.cache")
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            for j in r["entries"]:
                print(entry_line(j))
        return 0
    r = request(args.socket, "ha.status")
    if args.json or r["role"] == "off":
        print(json.dumps(r, indent=2) if args.json else "routerctl: high availability is off")
        return 0
    if r["sync"] != "up":
        print(f"role {r['role']}, mode {r['mode']}, sync link down: {r['error']}")
        return 0
    heard = "never" if r["last_heard"] is None else f"{r['last_heard']:.1f} s ago"
    print(f"role {r['role']}{'' if r['ready'] else ' (not ready: syncing)'}, mode {r['mode']}, "
          f"peer {r['peer']}:{r['port']} (last heard {heard})")
    print(f"sync lag {r['lag']:.3f} s, {r['pending']} waiting, {r['unacked']} unacknowledged")
    print(f"messages sent {r['sent']} ({r['sent_bytes']} bytes), received {r['received']}, "
          f"lost {r['lost']}, resent {r['resent']}, malformed "
          f"{sum(r['malformed'].values())}")
    print(f"cache internal {r['internal']}, external {r['external']}; commits {r['commits']}")
    return 0


def portmap(args: argparse.Namespace) -> int:
    if args.pmcmd == "events":
        return _json_events(args, "portmap.events")
    if args.pmcmd == "delete":
        r = request(args.socket, "portmap.delete", {"protocol": args.protocol, "port": args.port,
                                                    "address": args.address})
        print(json.dumps(r, indent=2) if args.json else
              "routerctl: deleted " + _portmap_line(r["deleted"]))
        return 0
    r = request(args.socket, "portmap.list")
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"external address {r['external'] or '(none)'}, PCP epoch {r['epoch']}")
    print(f"{'proto':<6} {'external':<8} {'internal':<46} {'client':<39} {'via':<6} "
          f"{'left':>7}  description")
    for m in r["mappings"]:
        print(_portmap_line(m))
    print(f"routerctl: {len(r['mappings'])} mappings.", file=sys.stderr)
    return 0


def _portmap_line(m: dict[str, Any]) -> str:
    inside = (f"[{m['internal']}]" if m["family"] == 6 else m["internal"]) + \
        f":{m['internal_port']}"
    ext = "pinhole" if m["family"] == 6 else str(m["external_port"])
    extra = f" filter {', '.join(m['filters'])}" if m["filters"] else ""
    return (f"{m['protocol']:<6} {ext:<8} {inside:<46} {m['client']:<39} {m['via']:<6} "
            f"{m['lifetime_left']:>6}s  {m['description']}{extra}")
