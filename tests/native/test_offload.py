"""Offload metadata: partial checksums (NEEDS_CSUM) and GSO super-packets.

The trap: a packet marked NEEDS_CSUM carries only the pseudo-header sum in its
L4 checksum field, and the kernel of a receiving namespace trusts the flag, so
a wrongly updated field passes every namespace test and breaks only on real
egress.  These tests therefore finish each partial checksum the way a NIC does
and compare with a full recompute.
"""

from __future__ import annotations

import struct

from router.datapath import CSUM_VALID, GSO_TCPV4, GSO_UDP_L4, NEEDS_CSUM, NO_OFFLOAD, Offload
from tests.native.conftest import (
    LAN,
    LAN_HOST,
    ROUTER_LAN,
    ROUTER_WAN,
    SERVER,
    WAN,
    Lab,
    LabFactory,
)
from tests.packets import ICMP, IP, TCP, UDP, Raw, checksum, finish_partial, verify_checksums


def pseudo_sum(src: str, dst: str, proto: int, length: int) -> int:
    """The folded pseudo-header sum, uncomplemented: what the kernel puts in
    the checksum field of a CHECKSUM_PARTIAL packet."""
    hdr = bytes(IP(src=src, dst=dst))[12:20] + struct.pack("!BBH", 0, proto, length)
    return ~checksum(hdr) & 0xFFFF


def make_partial(pkt: bytes) -> tuple[bytes, Offload]:
    """Turns a packet with a full checksum into one with a partial checksum."""
    b = bytearray(pkt)
    ihl = (b[0] & 0xF) * 4
    proto = b[9]
    off = 16 if proto == 6 else 6
    src, dst = ".".join(map(str, b[12:16])), ".".join(map(str, b[16:20]))
    struct.pack_into("!H", b, ihl + off, pseudo_sum(src, dst, proto, len(b) - ihl))
    return bytes(b), Offload(csum_flags=NEEDS_CSUM, csum_start=ihl, csum_offset=off)


def test_partial_tcp_checksum_through_snat(lab: Lab) -> None:
    full = bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=33000, dport=443, flags="S") /
                 Raw(b"x" * 100))
    pkt, off = make_partial(full)
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
    assert r.out_iface == WAN and r.offload == off  # metadata kept as is
    assert IP(r.data).src == ROUTER_WAN
    verify_checksums(finish_partial(r.data, r.offload))
    # The field itself is the new pseudo-header sum, not a full checksum.
    field = struct.unpack("!H", r.data[36:38])[0]
    assert field == pseudo_sum(ROUTER_WAN, SERVER, 6, len(r.data) - 20)


def test_partial_checksum_with_port_change_and_reply(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[nat]\npreserve_ports = false\nport_min = 30000\nport_max = 30009\n")
    full = bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=5000, dport=4789) / Raw(b"y" * 300))
    pkt, off = make_partial(full)
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
    p = IP(r.data)
    assert 30000 <= p[UDP].sport <= 30009
    verify_checksums(finish_partial(r.data, r.offload))
    # The reply comes back with a partial checksum too and is de-NATed.
    back = bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=4789, dport=p[UDP].sport) /
                 Raw(b"z" * 200))
    pkt, off = make_partial(back)
    (r,) = lab.dp.process([(WAN, pkt, off)], lab.now)
    assert r.out_iface == LAN
    q = IP(r.data)
    assert (q.dst, q[UDP].dport) == (LAN_HOST, 5000)
    verify_checksums(finish_partial(r.data, r.offload))


def test_partial_checksum_is_not_verified(lab: Lab) -> None:
    full = bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2) / Raw(b"abc"))
    pkt, off = make_partial(full)
    # As a plain packet, the partial field is a bad checksum ...
    assert lab.send(LAN, pkt).reason == "bad_l4_checksum"
    # ... with NEEDS_CSUM it is expected, and with CSUM_VALID it is trusted.
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
    assert r.reason == "none"
    bad = bytearray(full)
    bad[-1] ^= 1
    (r,) = lab.dp.process([(LAN, bytes(bad), Offload(csum_flags=CSUM_VALID))], lab.now)
    assert r.reason == "none"
    assert lab.dp.counters()["csum_partial"] == 1


def gso_tcp(payload: int = 20000, mss: int = 1448) -> tuple[bytes, Offload]:
    full = bytes(IP(src=LAN_HOST, dst=SERVER, flags="DF") /
                 TCP(sport=34000, dport=5201, flags="A", seq=1, ack=1) / Raw(b"d" * payload))
    pkt, off = make_partial(full)
    return pkt, Offload(csum_flags=NEEDS_CSUM, gso_type=GSO_TCPV4, gso_size=mss, hdr_len=40,
                        csum_start=off.csum_start, csum_offset=off.csum_offset)


def test_gso_tcp_super_packet_crosses_whole(lab: Lab) -> None:
    pkt, off = gso_tcp()
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)  # picked up mid-stream (loose)
    assert r.out_iface == WAN and len(r.data) == len(pkt) and r.offload == off
    assert IP(r.data).src == ROUTER_WAN and IP(r.data).len == len(pkt)
    verify_checksums(finish_partial(r.data, r.offload))
    (e,) = lab.entries()
    assert e.packets == (14, 0)  # ceil(20000 / 1448) segments
    c = lab.dp.counters()
    assert c["gso_packets"] == 1 and c["gso_segments"] == 14


def test_gso_udp_l4(lab: Lab) -> None:
    full = bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=7000, dport=443) / Raw(b"q" * 8000))
    pkt, off = make_partial(full)
    off = Offload(csum_flags=NEEDS_CSUM, gso_type=GSO_UDP_L4, gso_size=1000, hdr_len=28,
                  csum_start=20, csum_offset=6)
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
    assert r.out_iface == WAN and r.offload.gso_type == GSO_UDP_L4
    verify_checksums(finish_partial(r.data, r.offload))
    assert lab.entries()[0].packets == (8, 0)


def test_gso_segments_larger_than_output_mtu(lab_factory: LabFactory) -> None:
    from router.config import parse
    from router.tables import compile_tables
    from tests.native.conftest import BASE

    lab = lab_factory()
    lab.dp.load(compile_tables(parse(BASE.replace("mtu = 1500", "mtu = 1400").encode()), {}))
    pkt, off = gso_tcp(mss=1448)  # 20 + 20 + 1448 > 1400
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
    assert r.reason == "too_big" and r.out_iface == LAN
    p = IP(r.data)
    assert p.src == ROUTER_LAN and p[ICMP].type == 3 and p[ICMP].code == 4
    assert struct.unpack("!H", bytes(p[ICMP])[6:8])[0] == 1400
    assert r.offload == NO_OFFLOAD  # the router's own packet has no offload metadata
    verify_checksums(r.data)
    # Segments that fit pass, even though the super-packet is far larger.
    pkt, off = gso_tcp(mss=1360)
    (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
    assert r.out_iface == WAN


def test_inconsistent_offload_metadata_is_dropped(lab: Lab) -> None:
    tcp = bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=1, dport=2, flags="S"))
    udp = bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2))
    icmp = bytes(IP(src=LAN_HOST, dst=SERVER) / ICMP())
    cases = [
        (tcp, Offload(csum_flags=NEEDS_CSUM, csum_start=20, csum_offset=6)),   # wrong field
        (tcp, Offload(csum_flags=NEEDS_CSUM, csum_start=24, csum_offset=16)),  # wrong start
        (icmp, Offload(csum_flags=NEEDS_CSUM, csum_start=20, csum_offset=2)),  # not TCP/UDP
        (udp, Offload(csum_flags=NEEDS_CSUM, gso_type=GSO_TCPV4, gso_size=1000,
                      csum_start=20, csum_offset=6)),                           # TCPV4 on UDP
        (tcp, Offload(gso_type=GSO_TCPV4, gso_size=1000)),                      # no NEEDS_CSUM
        (tcp, Offload(csum_flags=NEEDS_CSUM, gso_type=GSO_TCPV4, gso_size=0,
                      csum_start=20, csum_offset=16)),                          # no segment size
        (udp, Offload(csum_flags=NEEDS_CSUM, gso_type=3, gso_size=1000,
                      csum_start=20, csum_offset=6)),                           # UFO
    ]
    for pkt, off in cases:
        (r,) = lab.dp.process([(LAN, pkt, off)], lab.now)
        assert (r.out_iface, r.reason) == (-1, "bad_offload"), off
    assert lab.entries() == []
