"""``routerctl conntrack``: the connection table, as conntrack-tools shows it.

The subcommands are conntrack's commands by name (``list``, ``get``,
``delete``, ``update``, ``events``, ``count``, ``flush``, ``stats``) or by
its letters (``routerctl conntrack -L -p tcp`` is ``conntrack list -p tcp``),
and the options are conntrack 1.4.7's, with its meanings: ``-f`` the family
(both unless asked, as conntrack 1.4.7 lists them on Linux 6), ``-u`` the
status, ``-n/-g/-j`` the NAT filters, ``-m`` the mark, ``-w`` the numeric
conntrack zone, ``-o extended,id,timestamp`` the output.  The router's own
filter, the firewall zone of the original source, is ``--fw-zone`` so that
it does not take conntrack's ``--zone``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from router.conntrack_text import Output, entry_line, event_line, stats_line
from router.ctfilter import KEYS as FILTERS  # the filter options a request carries
from router.ctl.client import CtlError, request, stream

# conntrack's command letters and the subcommand each is.
LETTERS = {"-L": "list", "-G": "get", "-D": "delete", "-U": "update", "-E": "events",
           "-C": "count", "-F": "flush", "-S": "stats"}
LONG = {"--dump": "list", "--get": "get", "--delete": "delete", "--update": "update",
        "--event": "events", "--count": "count", "--flush": "flush", "--stats": "stats"}
OUTPUTS = ("extended", "id", "timestamp")
EVENT_NAMES = {"NEW": "NEW", "UPDATE": "UPDATE", "UPDATES": "UPDATE", "DESTROY": "DESTROY"}


def letters_to_names(argv: list[str]) -> list[str]:
    """``conntrack -L ...`` → ``conntrack list ...``: the letter right after
    ``conntrack`` names the subcommand (``-S`` only when nothing but options
    follow, as it is also the socket option)."""
    try:
        i = argv.index("conntrack")
    except ValueError:
        return argv
    if i + 1 >= len(argv):
        return argv
    word = argv[i + 1]
    name = LETTERS.get(word) or LONG.get(word)
    if name is None or (word == "-S" and i + 2 < len(argv) and
                        not argv[i + 2].startswith("-")):
        return argv
    return [*argv[:i + 1], name, *argv[i + 2:]]


def _filters(p: argparse.ArgumentParser) -> None:
    """conntrack 1.4.7's filter options (its short letters included)."""
    p.add_argument("-p", "--proto", "--protonum", dest="proto", help="protocol name or number")
    p.add_argument("-s", "--src", "--orig-src", dest="src", help="original source address")
    p.add_argument("-d", "--dst", "--orig-dst", dest="dst", help="original destination address")
    p.add_argument("-r", "--reply-src", dest="reply_src", help="reply source address")
    p.add_argument("-q", "--reply-dst", dest="reply_dst", help="reply destination address")
    p.add_argument("--sport", "--orig-port-src", dest="sport", type=int,
                   help="original source port")
    p.add_argument("--dport", "--orig-port-dst", dest="dport", type=int,
                   help="original destination port")
    p.add_argument("--state", help="TCP state, e.g. ESTABLISHED")
    p.add_argument("-f", "--family", choices=["ipv4", "ipv6"],
                   help="address family (default: both, unless an address given names one)")
    p.add_argument("-u", "--status", help="ASSURED, SEEN_REPLY, UNREPLIED, ... (comma: all)")
    p.add_argument("-n", "--src-nat", dest="src_nat", nargs="?", const="", metavar="IP[:PORT]",
                   help="source-NATed (to this address, port)")
    p.add_argument("-g", "--dst-nat", dest="dst_nat", nargs="?", const="", metavar="IP[:PORT]",
                   help="destination-NATed (from this address, port)")
    p.add_argument("-j", "--any-nat", dest="any_nat", nargs="?", const="", metavar="IP[:PORT]",
                   help="either")
    p.add_argument("-m", "--mark", help="MARK or MARK/MASK")
    p.add_argument("-w", "--zone", help="conntrack zone number (the router has zone 0)")
    p.add_argument("--fw-zone", dest="fw_zone", metavar="NAME",
                   help="firewall zone the original source is in, e.g. lan")
    p.add_argument("-o", "--output", default="", metavar="extended,id,timestamp",
                   help="output options, as conntrack's -o")


def add_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    ct = sub.add_parser("conntrack", help="connection tracking table, as conntrack-tools",
                        parents=common)
    ctsub = ct.add_subparsers(dest="ctcmd", required=True)
    for name, helptext in (("list", "list connections, like conntrack -L"),
                           ("get", "one connection by its original tuple, like conntrack -G"),
                           ("delete", "delete the matching connections, like conntrack -D")):
        _filters(ctsub.add_parser(name, help=helptext, parents=common))
    up = ctsub.add_parser("update", help="set the time left of the matching connections, "
                          "like conntrack -U", parents=common)
    _filters(up)
    up.add_argument("-t", "--timeout", type=int, required=True,
                    help="seconds the connections have left")
    ev = ctsub.add_parser("events", help="stream connection events, like conntrack -E",
                          parents=common)
    ev.add_argument("-e", "--event-mask", dest="event", default="ALL",
                    help="NEW, UPDATES, DESTROY or ALL, comma separated (default ALL)")
    _filters(ev)
    ev.add_argument("-c", "--count", type=int, default=0, help="stop after N events")
    ev.add_argument("--duration", type=float, default=0,
                    help="stop after this many seconds (default: never)")
    ctsub.add_parser("count", help="number of connections, like conntrack -C", parents=common)
    ctsub.add_parser("flush", help="delete every connection, like conntrack -F", parents=common)
    ctsub.add_parser("stats", help="the counters, like conntrack -S", parents=common)


def _output(args: argparse.Namespace) -> Output:
    words = [w.strip().lower() for w in args.output.split(",") if w.strip()]
    bad = [w for w in words if w not in OUTPUTS]
    if bad:
        raise CtlError(f"-o {','.join(bad)}: not offered (offered: {', '.join(OUTPUTS)}; "
                       f"--json gives every field)")
    return Output(extended="extended" in words, id="id" in words,
                  timestamp="timestamp" in words)


def _filter_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in FILTERS if getattr(args, k, None) is not None}


def _event_types(mask: str) -> list[str]:
    out: list[str] = []
    for word in (w.strip().upper() for w in mask.split(",") if w.strip()):
        if word == "ALL":
            out += [t for t in EVENT_NAMES.values() if t not in out]
        elif word in EVENT_NAMES:
            out += [EVENT_NAMES[word]] if EVENT_NAMES[word] not in out else []
        else:
            raise CtlError(f"-e {word}: not an event type (NEW, UPDATES, DESTROY, ALL)")
    if not out:
        raise CtlError("-e: no event type given")
    return out


def _events(args: argparse.Namespace, out: Output) -> int:
    n = 0
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    msgs = stream(args.socket, "conntrack.events",
                  {**_filter_args(args), "types": _event_types(args.event)},
                  idle=max(0.1, args.duration) if deadline else 3600.0)
    try:
        for msg in msgs:
            if msg["type"] == "MISSED":
                print(f"routerctl: WARNING: {msg['count']} events were missed (this reader "
                      f"fell behind)", file=sys.stderr)
            else:
                print(json.dumps(msg) if args.json else event_line(msg, out), flush=True)
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


def _entries(args: argparse.Namespace, entries: list[dict[str, Any]], out: Output,
             verb: str) -> None:
    if args.json:
        print(json.dumps(entries, indent=2))
        return
    for e in entries:
        print(entry_line(e, out))
    print(f"routerctl: {len(entries)} flow entries have been {verb}.", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    out = _output(args) if hasattr(args, "output") else Output()
    if args.ctcmd == "events":
        return _events(args, out)
    if args.ctcmd == "list":
        _entries(args, request(args.socket, "conntrack.list", _filter_args(args)), out, "shown")
    elif args.ctcmd == "update":
        r = request(args.socket, "conntrack.update",
                    {**_filter_args(args), "timeout": args.timeout})
        _entries(args, r, out, "updated")
    elif args.ctcmd == "get":
        one = request(args.socket, "conntrack.get", _filter_args(args))
        if args.json:
            print(json.dumps(one, indent=2))   # the entry itself, as before
        else:
            _entries(args, [one], out, "shown")
    elif args.ctcmd == "delete":
        r = request(args.socket, "conntrack.delete", _filter_args(args))
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            for e in r["entries"]:
                print(entry_line(e, out))
            print(f"routerctl: {r['deleted']} flow entries have been deleted.", file=sys.stderr)
    elif args.ctcmd == "count":
        r = request(args.socket, "conntrack.count")
        print(json.dumps(r) if args.json else r["count"])
    elif args.ctcmd == "stats":
        r = request(args.socket, "stats")
        print(json.dumps(r["counters"], indent=2) if args.json else stats_line(r["counters"]))
    elif args.ctcmd == "flush":
        r = request(args.socket, "conntrack.flush")
        if args.json:
            print(json.dumps(r))
        else:
            print(f"routerctl: connection tracking table has been emptied ({r['flushed']} "
                  f"entries).", file=sys.stderr)
    return 0
