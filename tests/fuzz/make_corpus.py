"""Writes the seed corpus of the batch fuzzer: real packets of the lab's
flows (TCP handshake and close, UDP both ways, ICMP echo and errors), in the
fuzzer's input format.  Usage: python tests/fuzz/make_corpus.py OUTDIR"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Raw  # type: ignore[import-untyped]

LAN, SRV, WAN = "192.168.1.2", "198.51.100.10", "203.0.113.1"


def rec(iface: int, pkt: object, room: bool = True, tick: int = 1) -> bytes:
    b = bytes(pkt)  # type: ignore[call-overload]
    flags = (0x80 if room else 0) | (tick << 1) | iface
    return struct.pack("!BH", flags, len(b)) + b


def _frags() -> list[object]:
    from scapy.layers.inet import fragment  # type: ignore[import-untyped]

    big = IP(src=LAN, dst=SRV, id=9) / UDP(sport=5000, dport=53) / Raw(b"f" * 1400)
    parts = fragment(big, fragsize=400)
    return [parts[2], parts[1], parts[0], parts[3]]  # out of order


def _frags6() -> list[object]:
    from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6  # type: ignore[import-untyped]

    big = IPv6(src="fd00:1::2", dst="2001:db8:9::1") / IPv6ExtHdrFragment(id=77) / \
        UDP(sport=5000, dport=53) / Raw(b"g" * 1400)
    parts = fragment6(big, 600)
    return [parts[1], parts[0], *parts[2:]]  # the second before the first


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    udp_out = IP(src=LAN, dst=SRV) / UDP(sport=5000, dport=53) / Raw(b"query")
    seeds = {
        "tcp_life": [
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4000, dport=80, flags="S")),
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=80, dport=4000, flags="SA", ack=1)),
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4000, dport=80, flags="A", seq=1, ack=1)),
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4000, dport=80, flags="FA", seq=1, ack=1)),
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=80, dport=4000, flags="FA", seq=1, ack=2)),
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4000, dport=80, flags="A", seq=2, ack=2)),
        ],
        "tcp_window": [
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4001, dport=80, flags="S", seq=1000,
                                              options=[("MSS", 1460), ("WScale", 7),
                                                       ("SAckOK", b""), ("NOP", None)])),
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=80, dport=4001, flags="SA", seq=9000,
                                              ack=1001, window=500,
                                              options=[("WScale", 9), ("SAckOK", b"")])),
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4001, dport=80, flags="PA", seq=1001,
                                              ack=9001) / Raw(b"d" * 300)),
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=80, dport=4001, flags="A", seq=9001,
                                              ack=1101, options=[("NOP", None), ("NOP", None),
                                                                 ("SAck", (1201, 1301))])),
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=80, dport=4001, flags="R", seq=70000)),
            rec(0, IP(src=LAN, dst=SRV) / TCP(sport=4001, dport=80, flags="A", seq=5_000_000,
                                              ack=9001)),
        ],
        "portmap": [  # mappings LAN hosts asked for (the variants that load them)
            rec(1, IP(src=SRV, dst=WAN) / UDP(sport=5555, dport=7000) / Raw(b"in")),
            rec(0, IP(src=LAN, dst=SRV) / UDP(sport=6000, dport=5555) / Raw(b"out")),
            rec(0, IP(src=LAN, dst="198.51.100.99") / UDP(sport=6000, dport=53) / Raw(b"new")),
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=4000, dport=7000, flags="S")),
            rec(0, IP(src="192.168.1.3", dst=WAN) / UDP(sport=9, dport=7000) / Raw(b"hair")),
            rec(1, IPv6(src="2001:db8:9::1", dst="fd00:1::2") / TCP(sport=4000, dport=443,
                                                                    flags="S")),
        ],
        "ipv6": [
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1") / ICMPv6EchoRequest(id=3)),
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1") / IPv6ExtHdrHopByHop() /
                IPv6ExtHdrDestOpt() / TCP(sport=4000, dport=80, flags="S")),
            rec(1, IPv6(src="2001:db8:9::1", dst="2001:db8:abc:1::2") /
                TCP(sport=80, dport=4000, flags="SA", ack=1)),
            rec(1, IPv6(src="2001:db8:9::1", dst="2001:db8:abc:1::2") / ICMPv6DestUnreach() /
                bytes(IPv6(src="2001:db8:abc:1::2", dst="2001:db8:9::1") /
                      UDP(sport=5, dport=9))),
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1", hlim=1) / UDP(sport=1,
                                                                               dport=2)),
        ],
        "nat66": [
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1") / UDP(sport=4000, dport=53)),
            rec(0, IPv6(src="fd00:1::3", dst="2001:db8:9::1") / UDP(sport=4000, dport=53)),
            rec(1, IPv6(src="2001:db8:9::1", dst="2001:db8:2::1") / UDP(sport=53, dport=4000)),
            rec(1, IPv6(src="2001:db8:9::7", dst="2001:db8:2::1") / ICMPv6DestUnreach() /
                bytes(IPv6(src="2001:db8:2::1", dst="2001:db8:9::1", hlim=63) /
                      UDP(sport=4000, dport=53))),
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1") / ICMPv6EchoRequest(id=9)),
            rec(1, IPv6(src="2001:db8:9::1", dst="2001:db8:2::1") / TCP(sport=80, dport=4000,
                                                                       flags="SA", ack=1)),
        ],
        "frag6": [rec(0, f) for f in _frags6()] + [
            rec(1, IPv6(src="2001:db8:9::1", dst="2001:db8:2::1") / UDP(sport=53, dport=5000)),
            rec(1, IPv6(src="2001:db8:9::7", dst="2001:db8:2::1") / ICMPv6DestUnreach() /
                bytes(_frags6()[1])[:200])],
        "udp": [rec(0, udp_out), rec(1, IP(src=SRV, dst=WAN) / UDP(sport=53, dport=5000))],
        "icmp": [
            rec(0, IP(src=LAN, dst=SRV) / ICMP(type=8, id=7)),
            rec(1, IP(src=SRV, dst=WAN) / ICMP(type=0, id=7)),
            rec(0, IP(src=LAN, dst="192.168.1.1") / ICMP(type=8, id=8)),
            rec(0, IP(src=LAN, dst=SRV, ttl=1) / UDP(sport=1, dport=2)),
        ],
        "related": [
            rec(0, udp_out),
            rec(1, IP(src=SRV, dst=WAN) / ICMP(type=3, code=3) /
                Raw(bytes(IP(src=WAN, dst=SRV, ttl=63) / UDP(sport=5000, dport=53) /
                          Raw(b"query")))),
        ],
        "fragments": [rec(0, f) for f in _frags()],
        "forward": [
            rec(1, IP(src=SRV, dst=WAN) / TCP(sport=5555, dport=85, flags="S")),
            rec(0, IP(src="192.168.1.2", dst=SRV) / TCP(sport=8085, dport=5555, flags="SA",
                                                       ack=1)),
        ],
        # An inside host's error about a reply, whose quote's destination
        # options header claims more than the quote holds (NAT66 once wrote
        # the translated port past the packet here).
        "quote_overrun": [
            rec(0, IPv6(src="fd00:1::3", dst="2001:db8:9::1") / UDP(sport=0, dport=0)),
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1") / UDP(sport=0, dport=0)),
            rec(0, IPv6(src="fd00:1::2", dst="2001:db8:9::1") / ICMPv6DestUnreach(code=4) /
                Raw(bytes(IPv6(src="2001:db8:9::1", dst="fd00:1::2", nh=60, plen=72)) +
                    bytes([17, 7, 1, 6, 0, 0, 0, 0])), room=False),
        ],
        "too_big": [rec(0, IP(src=LAN, dst=SRV, flags="DF") / UDP(sport=1, dport=2) /
                        Raw(b"x" * 1450), room=False)],
    }
    for variant in (0x05, 0x27, 0x5A):
        for name, recs in seeds.items():
            (out / f"{name}_{variant:02x}").write_bytes(bytes([variant]) + b"".join(recs))


if __name__ == "__main__":
    main()
