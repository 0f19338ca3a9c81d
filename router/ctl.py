"""``routerctl``: talk to a running router through its control socket.

    routerctl [-S SOCKET] [--json] conntrack list [-p PROTO] [-s ADDR] [-d ADDR]
                                    [--sport N] [--dport N] [--state S] [--zone Z]
    routerctl conntrack get -p P -s A -d A --sport N --dport N
    routerctl conntrack delete [filters as for list]
    routerctl conntrack count
    routerctl conntrack flush
    routerctl conntrack events [-e NEW,UPDATE,DESTROY] [filters] [-c N] [-t SECONDS]
    routerctl capture IFACE -w FILE [-c N] [-t SECONDS] [--snaplen N]
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
import base64
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Generator, Iterator
from typing import Any

import toml

from router.conntrack_text import MAPPING_HEADER, entry_line, event_line, mapping_line

DEFAULT_SOCKET = "/run/router/router.sock"


class CtlError(Exception):
    pass


def _connect(path: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise CtlError(f"no control socket at {path}: is the router running? "
                       f"(use -S to name another socket)") from None
    except PermissionError:
        raise CtlError(f"permission denied on {path}: run as root or as a member of the "
                       f"socket's group") from None
    except ConnectionRefusedError:
        raise CtlError(f"nothing listens on {path}: the router is not running "
                       f"(a stale socket file?)") from None
    except OSError as e:
        raise CtlError(f"cannot connect to {path}: {e.strerror or e}") from None
    return s


def _lines(s: socket.socket, timeout: float) -> Iterator[dict[str, Any]]:
    buf = b""
    while True:
        while b"\n" not in buf:
            try:
                chunk = s.recv(1 << 20)
            except TimeoutError:
                raise CtlError(f"no answer from the router within {timeout} s") from None
            if not chunk:
                if buf:
                    raise CtlError("the router closed the connection mid-message")
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield json.loads(line)


def request(path: str, cmd: str, args: dict[str, Any] | None = None,
            timeout: float = 10.0) -> Any:
    """Sends one request; returns its result or raises CtlError."""
    with _connect(path, timeout) as s:
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        msg = next(_lines(s, timeout), None)
    if msg is None:
        raise CtlError("the router closed the connection without an answer")
    if not msg.get("ok"):
        raise CtlError(str(msg.get("error", "unknown error")))
    return msg["result"]


def stream(path: str, cmd: str, args: dict[str, Any], idle: float = 3600.0,
           ) -> Generator[dict[str, Any], None, None]:
    """Sends a streaming request; yields its messages until the router ends
    the stream (or nothing came for ``idle`` seconds)."""
    with _connect(path, 10.0) as s:
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        msgs = _lines(s, 10.0)
        first = next(msgs, None)
        if first is None:
            raise CtlError("the router closed the connection without an answer")
        if not first.get("ok"):
            raise CtlError(str(first.get("error", "unknown error")))
        s.settimeout(idle)
        try:
            yield from msgs
        except CtlError:
            return


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


def _add_filters(p: argparse.ArgumentParser) -> None:
    """The conntrack filters, as conntrack-tools names them."""
    p.add_argument("-p", "--proto", help="protocol name or number")
    p.add_argument("-s", "--src", help="original source address")
    p.add_argument("-d", "--dst", help="original destination address")
    p.add_argument("--sport", type=int, help="original source port")
    p.add_argument("--dport", type=int, help="original destination port")
    p.add_argument("--state", help="TCP state, e.g. ESTABLISHED")
    p.add_argument("--zone", help="zone the original source is in, e.g. lan")


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
    ct = sub.add_parser("conntrack", help="connection tracking table", parents=common)
    ctsub = ct.add_subparsers(dest="ctcmd", required=True)
    for name, helptext in (("list", "list connections like conntrack -L"),
                           ("get", "one connection by its original tuple, like conntrack -G"),
                           ("delete", "delete the matching connections, like conntrack -D")):
        _add_filters(ctsub.add_parser(name, help=helptext, parents=common))
    ev = ctsub.add_parser("events", help="stream connection events, like conntrack -E",
                          parents=common)
    ev.add_argument("-e", "--event", default="NEW,UPDATE,DESTROY",
                    help="event types, comma separated (default all)")
    _add_filters(ev)
    ev.add_argument("-c", "--count", type=int, default=0, help="stop after N events")
    ev.add_argument("-t", "--timeout", type=float, default=0,
                    help="stop after this many seconds (default: never)")
    ctsub.add_parser("count", help="number of connections, like conntrack -C", parents=common)
    ctsub.add_parser("flush", help="delete every connection, like conntrack -F", parents=common)
    sub.add_parser("stats", help="data plane counters and drops by reason", parents=common)
    sub.add_parser("interfaces", help="interfaces and their counters", parents=common)
    sub.add_parser("routes", help="the routing table, like ip route", parents=common)
    cap = sub.add_parser("capture", help="capture packets of an interface to a pcap file",
                         parents=common)
    cap.add_argument("interface", help="interface name")
    cap.add_argument("-w", "--write", required=True, help="pcap file to write ('-': stdout)")
    cap.add_argument("-c", "--count", type=int, default=0,
                     help="stop after N packets (default: at the time limit)")
    cap.add_argument("-t", "--timeout", type=float, default=10.0,
                     help="stop after this many seconds (default 10, at most 3600)")
    cap.add_argument("--snaplen", type=int, default=2048,
                     help="bytes kept of each packet (default 2048)")
    sub.add_parser("status", help="version, uptime, config, table use", parents=common)
    sub.add_parser("reload", help="reload the config file (like SIGHUP) and report",
                   parents=common)
    nat = sub.add_parser("nat", help="NAT mappings", parents=common)
    nat.add_argument("what", choices=["list"], help="list: active mappings and their use")
    fwp = sub.add_parser("firewall", help="firewall rules", parents=common)
    fwp.add_argument("what", choices=["list"], help="list: rules with their counters")
    lbp = sub.add_parser("lb", help="load balancers", parents=common)
    lbp.add_argument("what", choices=["list"], help="list: backends and their connections")
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
    cfg = sub.add_parser("config", help="the running config", parents=common)
    cfg.add_argument("what", choices=["show"], help="show: print the running config as TOML")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    try:
        if args.cmd == "conntrack":
            return _conntrack(args)
        if args.cmd == "capture":
            return _capture(args)
        if args.cmd == "portmap":
            return _portmap(args)
        if args.cmd == "ha":
            return _ha(args)
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
        print("cpu=0\t" + " ".join(f"{k}={c[k]}" for k in (
            "found", "invalid", "ignore", "insert", "insert_failed", "drop", "early_drop",
            "error", "search_restart")))
        _print_kv({"counters": c, "drops": {k: v for k, v in result["drops"].items() if v}})
    else:
        _print_kv(result)
    return 0


FILTERS = ("proto", "src", "dst", "sport", "dport", "state", "zone")


def _events(args: argparse.Namespace) -> int:
    filt = {k: getattr(args, k) for k in FILTERS}
    types = [t.strip().upper() for t in args.event.split(",") if t.strip()]
    n = 0
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    msgs = stream(args.socket, "conntrack.events", {**filt, "types": types},
                  idle=max(0.1, args.timeout) if deadline else 3600.0)
    try:
        for msg in msgs:
            if msg["type"] == "MISSED":
                print(f"routerctl: WARNING: {msg['count']} events were missed (this reader "
                      f"fell behind)", file=sys.stderr)
            else:
                print(json.dumps(msg) if args.json else event_line(msg), flush=True)
                n += 1
            if (args.count and n >= args.count) or \
                    (deadline is not None and time.monotonic() >= deadline):
                break
    except KeyboardInterrupt:
        pass
    finally:
        msgs.close()
    print(f"routerctl: {n} flow events have been shown.", file=sys.stderr)
    return 0


PCAP_MAGIC_US = 0xA1B2C3D4


def _capture(args: argparse.Namespace) -> int:
    """Writes the packets the router streams as a classic pcap file
    (microsecond timestamps, LINKTYPE_RAW: each record an IP packet)."""
    msgs = stream(args.socket, "capture", {"interface": args.interface, "count": args.count,
                                           "duration": args.timeout, "snaplen": args.snaplen},
                  idle=args.timeout + 10)
    out = sys.stdout.buffer if args.write == "-" else open(args.write, "wb")  # noqa: SIM115
    n = lost = 0
    try:
        for msg in msgs:
            if msg["type"] == "START":
                out.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, msg["snaplen"],
                                      msg["linktype"]))
            elif msg["type"] == "PACKET":
                data = base64.b64decode(msg["data"])
                ts = msg["ts_us"]
                out.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(data),
                                      msg["len"]) + data)
                n += 1
            elif msg["type"] == "END":
                lost = msg["lost"]
                break
    except KeyboardInterrupt:
        pass
    finally:
        msgs.close()
        out.flush()
        if out is not sys.stdout.buffer:
            out.close()
    print(f"routerctl: {n} packets captured on {args.interface}"
          + (f", {lost} lost (capture ring full)" if lost else ""), file=sys.stderr)
    return 0


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


def _ha(args: argparse.Namespace) -> int:
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


def _portmap(args: argparse.Namespace) -> int:
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


def _conntrack(args: argparse.Namespace) -> int:
    if args.ctcmd == "events":
        return _events(args)
    if args.ctcmd == "list":
        filt = {k: getattr(args, k) for k in FILTERS}
        entries = request(args.socket, "conntrack.list", filt)
        if args.json:
            print(json.dumps(entries, indent=2))
        else:
            for e in entries:
                print(entry_line(e))
            print(f"routerctl: {len(entries)} flow entries have been shown.", file=sys.stderr)
    elif args.ctcmd in ("get", "delete"):
        filt = {k: getattr(args, k) for k in FILTERS}
        r = request(args.socket, f"conntrack.{args.ctcmd}", filt)
        if args.json:
            print(json.dumps(r, indent=2))
        elif args.ctcmd == "get":
            print(entry_line(r))
            print("routerctl: 1 flow entries have been shown.", file=sys.stderr)
        else:
            print(f"routerctl: {r['deleted']} flow entries have been deleted.", file=sys.stderr)
    elif args.ctcmd == "count":
        r = request(args.socket, "conntrack.count")
        print(json.dumps(r) if args.json else r["count"])
    elif args.ctcmd == "flush":
        r = request(args.socket, "conntrack.flush")
        if args.json:
            print(json.dumps(r))
        else:
            print(f"routerctl: connection tracking table has been emptied ({r['flushed']} "
                  f"entries).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
