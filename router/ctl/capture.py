"""``routerctl capture``: packets of one interface (or ``any``), as tcpdump
would write them.

The filter is a tcpdump expression; the router compiles it with libpcap and
runs it in the data plane on each packet before anything is copied out, so a
busy link can be captured selectively.  The file is pcapng by default: one
interface block per captured interface and each packet's direction in its
``epb_flags`` (inbound or outbound, as Wireshark and tshark show it);
``--pcap`` writes classic pcap, which has no place for the direction.
``-w -`` streams to standard output, flushed packet by packet, for
``routerctl capture wan0 -w - | tcpdump -r -`` or Wireshark live.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import struct
import sys
from typing import Any, BinaryIO

from router.ctl.client import stream

PCAP_MAGIC_US = 0xA1B2C3D4
# pcapng (draft-ietf-opsawg-pcapng): block types, the option codes used.
SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, IF_NAME, IF_TSRESOL, EPB_FLAGS = 0, 2, 9, 2
DIRECTION = {"in": 1, "out": 2}   # epb_flags bits 0-1


def add_parser(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    cap = sub.add_parser("capture", help="capture packets of an interface, filtered like "
                         "tcpdump, to a pcapng file or standard output", parents=common,
                         usage="routerctl capture [-i] INTERFACE -w FILE [options] "
                               "[tcpdump filter expression]")
    cap.add_argument("interface", nargs="?", help="interface name, or any")
    # The filter expression is the words left after the options (main()
    # hands them over as args.expression), as on tcpdump's command line.
    cap.add_argument("-i", dest="iface", metavar="INTERFACE",
                     help="interface, as tcpdump's -i (then no positional interface)")
    cap.add_argument("-w", "--write", required=True, help="file to write ('-': stdout)")
    cap.add_argument("-c", "--count", type=int, default=0,
                     help="stop after N packets (default: at the time limit)")
    cap.add_argument("-t", "--timeout", type=float, default=10.0,
                     help="stop after this many seconds (default 10, at most 3600; "
                          "0: until interrupted)")
    cap.add_argument("-s", "--snaplen", type=int, default=2048,
                     help="bytes kept of each packet (default 2048)")
    cap.add_argument("--pcap", action="store_true",
                     help="classic pcap instead of pcapng (no direction)")


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", kind, n) + body + struct.pack("<I", n)


def pcapng_header(names: list[str], linktype: int, snaplen: int) -> bytes:
    """The section header and an interface block per interface."""
    out = _block(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1))
    for name in names:
        opts = _option(IF_NAME, name.encode()) + _option(IF_TSRESOL, b"\x06") + \
            _option(OPT_END, b"")
        out += _block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts)
    return out


def pcapng_packet(iface: int, ts_us: int, data: bytes, length: int, direction: str) -> bytes:
    body = struct.pack("<IIIII", iface, ts_us >> 32, ts_us & 0xFFFFFFFF, len(data), length)
    body += data + b"\0" * (-len(data) % 4)
    body += _option(EPB_FLAGS, struct.pack("<I", DIRECTION[direction])) + _option(OPT_END, b"")
    return _block(EPB, body)


def pcap_header(linktype: int, snaplen: int) -> bytes:
    return struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


def pcap_packet(ts_us: int, data: bytes, length: int) -> bytes:
    return struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000, len(data), length) + data


def run(args: argparse.Namespace) -> int:
    words = list(args.expression)
    iface = args.iface
    if iface is None:
        iface = args.interface
    elif args.interface is not None:
        words.insert(0, args.interface)
    if iface is None:
        print("routerctl: capture: name an interface (or any)", file=sys.stderr)
        return 2
    msgs = stream(args.socket, "capture", {
        "interface": iface, "count": args.count, "duration": args.timeout,
        "snaplen": args.snaplen, "filter": " ".join(words)},
        idle=(args.timeout + 10) if args.timeout > 0 else 3600.0)
    live = args.write == "-"
    # The router's answer first: a refused filter leaves no file behind.
    first = next(msgs, None)
    out: BinaryIO = sys.stdout.buffer if live else open(args.write, "wb")  # noqa: SIM115
    n = lost = filtered = 0
    names = [iface]
    try:
        for msg in itertools.chain([first] if first else [], msgs):
            if msg["type"] == "INTERFACES":
                names = msg["names"]
            elif msg["type"] == "START":
                out.write(pcap_header(msg["linktype"], msg["snaplen"]) if args.pcap else
                          pcapng_header(names, msg["linktype"], msg["snaplen"]))
            elif msg["type"] == "PACKET":
                data = base64.b64decode(msg["data"])
                out.write(pcap_packet(msg["ts_us"], data, msg["len"]) if args.pcap else
                          pcapng_packet(msg["iface"], msg["ts_us"], data, msg["len"],
                                        msg["dir"]))
                n += 1
            elif msg["type"] == "END":
                lost, filtered = msg["lost"], msg.get("filtered", 0)
                break
            if live:
                out.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        msgs.close()
        with contextlib.suppress(BrokenPipeError):
            out.flush()
        if not live:
            out.close()
    print(f"routerctl: {n} packets captured on {iface}"
          + (f", {filtered} not matching the filter" if filtered else "")
          + (f", {lost} lost (capture ring full)" if lost else ""), file=sys.stderr)
    return 0
