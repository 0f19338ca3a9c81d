"""Test-only packet helpers: scapy builds packets, and an independent
checksum check verifies what the router sends."""

from __future__ import annotations

import struct

from scapy.layers.inet import ICMP, IP, TCP, UDP  # type: ignore[import-untyped]
from scapy.packet import Raw  # type: ignore[import-untyped]

__all__ = ["ICMP", "IP", "TCP", "UDP", "Raw", "checksum", "verify_checksums"]


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum, written out plainly."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def verify_checksums(pkt: bytes) -> None:
    """Asserts that the IPv4 header and L4 checksums of ``pkt`` are right,
    the way a receiver computes them: from scratch."""
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack("!H", pkt[2:4])[0]
    assert total == len(pkt), f"total length {total} != {len(pkt)}"
    assert checksum(pkt[:ihl]) == 0, "bad IPv4 header checksum"
    proto = pkt[9]
    l4 = pkt[ihl:total]
    if proto in (6, 17):
        if proto == 17 and struct.unpack("!H", l4[6:8])[0] == 0:
            return  # no checksum (RFC 768)
        pseudo = pkt[12:20] + struct.pack("!BBH", 0, proto, len(l4))
        assert checksum(pseudo + l4) == 0, f"bad {'TCP' if proto == 6 else 'UDP'} checksum"
    elif proto == 1:
        assert checksum(l4) == 0, "bad ICMP checksum"


def ip(pkt: object) -> bytes:
    """scapy packet to bytes with all checksums computed."""
    return bytes(pkt)  # type: ignore[call-overload]
