"""Parsing: byte fixtures for every malformed case, and random bytes that
must never crash the pipeline or corrupt the table."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.native.conftest import LAN, LAN_HOST, SERVER, WAN, Lab, LabFactory, make_lab
from tests.packets import ICMP, IP, TCP, UDP, Raw, checksum


def good_udp() -> bytearray:
    return bytearray(bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1000, dport=2000) /
                           Raw(b"payload!")))


def fix_ip_csum(b: bytearray) -> bytearray:
    ihl = (b[0] & 0xF) * 4
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", checksum(bytes(b[:ihl])))
    return b


def mutate(**kw: int) -> bytes:
    b = good_udp()
    for off, val in kw.items():
        b[int(off[1:])] = val
    return bytes(fix_ip_csum(b))


CASES = [
    ("empty", b"", "short_packet"),
    ("one byte", b"\x45", "short_packet"),
    ("19 bytes", bytes(good_udp()[:19]), "short_packet"),
    ("version 5", mutate(o0=0x55), "bad_ip_version"),
    ("version 0", mutate(o0=0x05), "bad_ip_version"),
    ("ihl 4", mutate(o0=0x44), "bad_header_length"),
    ("ihl beyond packet", mutate(o0=0x4F), "bad_header_length"),
    ("total length too big", mutate(o2=0x10), "bad_total_length"),
    ("total length < ihl", mutate(o2=0, o3=10), "bad_total_length"),
    ("bad ip checksum", bytes(good_udp()[:10] + b"\x12\x34" + good_udp()[12:]),
     "bad_ip_checksum"),
    ("ipv6 hop-by-hop header cut", b"\x60" + b"\0" * 39, "bad_ipv6_ext_header"),
    ("ipv6 payload beyond the read", b"\x60\0\0\0\0\x10" + b"\0" * 34, "bad_total_length"),
    ("short ipv6", b"\x60\0\0", "short_packet"),
]


@pytest.mark.parametrize(("name", "pkt", "reason"), CASES, ids=[c[0] for c in CASES])
def test_malformed_ip(lab: Lab, name: str, pkt: bytes, reason: str) -> None:
    r = lab.send(LAN, pkt)
    assert (r.out_iface, r.reason) == (-1, reason)
    assert lab.dp.drops()[reason] == 1


def l4_truncated(proto_layer: object, keep: int) -> bytes:
    full = bytes(IP(src=LAN_HOST, dst=SERVER) / proto_layer)  # type: ignore[operator]
    b = bytearray(full[: 20 + keep])
    b[2:4] = struct.pack("!H", len(b))
    return bytes(fix_ip_csum(b))


@pytest.mark.parametrize(("layer", "keep"), [
    (TCP(sport=1, dport=2), 19), (TCP(sport=1, dport=2), 0), (UDP(sport=1, dport=2), 7),
    (ICMP(type=8), 7),
])
def test_truncated_l4(lab: Lab, layer: object, keep: int) -> None:
    r = lab.send(LAN, l4_truncated(layer, keep))
    assert r.reason == "short_l4_header"


def test_tcp_data_offset_beyond_segment(lab: Lab) -> None:
    b = bytearray(bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=1, dport=2, flags="S")))
    b[32] = 0xF0  # 60-byte header in a 20-byte segment
    assert lab.send(LAN, bytes(b)).reason == "short_l4_header"


def test_udp_length_field_beyond_datagram(lab: Lab) -> None:
    b = good_udp()
    b[24:26] = struct.pack("!H", 500)
    assert lab.send(LAN, bytes(b)).reason == "short_l4_header"


@pytest.mark.parametrize("layer", [TCP(sport=1, dport=2, flags="S"), UDP(sport=1, dport=2),
                                   ICMP(type=8)])
def test_bad_l4_checksum(lab: Lab, layer: object) -> None:
    b = bytearray(bytes(IP(src=LAN_HOST, dst=SERVER) / layer / Raw(b"abcd")))  # type: ignore[operator]
    b[-1] ^= 0xFF
    assert lab.send(LAN, bytes(b)).reason == "bad_l4_checksum"


def test_checksum_verification_can_be_disabled(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[conntrack]\nchecksum = false\n")
    b = bytearray(bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2) / Raw(b"abcd")))
    b[-1] ^= 0xFF
    assert lab.send(LAN, bytes(b)).out_iface == WAN


def test_trailing_padding_is_cut(lab: Lab) -> None:
    pkt = bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2) / Raw(b"abc"))
    r = lab.send(LAN, pkt + b"\0" * 10)
    assert r.out_iface == WAN and len(r.data) == len(pkt)


def test_icmp_error_with_truncated_quote(lab: Lab) -> None:
    quoted = bytes(IP(src=SERVER, dst=LAN_HOST) / UDP(sport=1, dport=2))[:24]
    r = lab.send(WAN, bytes(IP(src=SERVER, dst="203.0.113.1") / ICMP(type=3, code=3) /
                            Raw(quoted)))
    assert r.reason == "short_l4_header"


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=16))
def test_random_bytes_never_crash_or_corrupt(blobs: list[bytes]) -> None:
    lab = make_lab(capacity=32)
    pkts = []
    for b in blobs:
        # Half of them get a plausible IPv4 header so that deeper code runs.
        if b and b[0] & 1:
            ip = bytearray(bytes(IP(src=LAN_HOST, dst=SERVER, proto=b[0] % 3 * 5 + 1)))
            ip[2:4] = struct.pack("!H", 20 + len(b))
            fix_ip_csum(ip)
            b = bytes(ip) + b
        pkts.append((b[0] % 2 if b else 0, b))
    results = lab.dp.process(pkts, lab.now)
    assert len(results) == len(pkts)
    for r in results:
        assert r.out_iface in (-1, 0, 1)
    n = lab.dp.count()
    assert n == len(lab.entries()) <= 32
