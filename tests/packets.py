"""Test-only packet helpers: scapy builds packets, fragments cut and put
together as hosts do, and an independent checksum check verifies what the
router sends."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment  # type: ignore[import-untyped]
from scapy.layers.inet6 import fragment6  # type: ignore[import-untyped]
from scapy.packet import Raw  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from router.datapath import Offload

__all__ = ["ICMP", "IP", "TCP", "UDP", "Raw", "checksum", "finish_partial", "fragments4",
           "fragments6", "reassemble4", "reassemble6", "verify_checksums"]


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


def finish_partial(pkt: bytes, off: Offload) -> bytes:
    """What a NIC does with NEEDS_CSUM: sum from csum_start (field included),
    complement, store."""
    b = bytearray(pkt)
    c = checksum(bytes(b[off.csum_start:]))
    struct.pack_into("!H", b, off.csum_start + off.csum_offset, c)
    return bytes(b)


def fragments4(pkt: object, size: int = 600) -> list[bytes]:
    """An IPv4 datagram cut into fragments of at most ``size`` bytes of data."""
    return [bytes(f) for f in fragment(pkt, fragsize=size)]


def fragments6(pkt: object, size: int = 1280) -> list[bytes]:
    """An IPv6 datagram (with a fragment header) cut into packets of ``size``."""
    return [bytes(f) for f in fragment6(pkt, size)]


def reassemble4(parts: list[bytes]) -> bytes:
    """Reassembles IPv4 fragments as a receiver does, checking each header."""
    chunks = {}
    hdr = b""
    for b in parts:
        p = IP(b)
        assert checksum(b[:20]) == 0, "bad IP header checksum on a fragment"
        if p.frag == 0:
            hdr = b
        chunks[p.frag * 8] = bytes(p.payload)
    data = b"".join(chunks[k] for k in sorted(chunks))
    whole = IP(hdr[:20]) / Raw(data)
    whole[IP].flags = 0
    whole[IP].frag = 0
    whole[IP].len = None
    whole[IP].chksum = None
    return bytes(whole)


def reassemble6(parts: list[bytes]) -> bytes:
    """Puts IPv6 fragments together as a receiving host does (RFC 8200 4.5):
    the unfragmentable part of the first, the fragment data in offset order."""
    chunks: dict[int, bytes] = {}
    first = b""
    for b in parts:
        assert b[6] == 44, "not a fragment"
        fh = b[40:48]
        off = int.from_bytes(fh[2:4], "big") & 0xFFF8
        chunks[off] = b[48:]
        if off == 0:
            first = b
    data = b"".join(chunks[k] for k in sorted(chunks))
    hdr = bytearray(first[:40])
    hdr[6] = first[40]  # the fragment header's next header
    hdr[4:6] = len(data).to_bytes(2, "big")
    return bytes(hdr) + data
