"""NAT66 masquerade through the C core: address and port rewrites with
incremental checksum updates (checked against a full recompute), replies
addressed to the router, ICMPv6 errors with their quotes, partial checksums
and TCPv6 GSO packets, port exhaustion, and NPTv6 taking precedence."""

from __future__ import annotations

import socket
import struct

from scapy.layers.inet import TCP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
)
from scapy.packet import Raw  # type: ignore[import-untyped]

from router.datapath import GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM, SRC_NAT, Offload
from tests.native.conftest import Lab, make_lab
from tests.native.test_ipv6 import LAN6, SERVER6, V6, WAN6, out6, verify6
from tests.packets import checksum, finish_partial

HOST6 = "2001:db8:1::2"
HOST6B = "2001:db8:1::3"
ROUTER_WAN6 = "2001:db8:2::1"
MASQ = """
[[nat.masquerade6]]
interface = "wan6"
sources = ["2001:db8:1::/64"]
"""


def lab66(extra: str = "") -> Lab:
    return make_lab(V6 + MASQ + extra)


def test_tcp_masqueraded_both_ways_with_valid_checksums() -> None:
    lab = lab66()
    syn = out6(TCP(sport=40000, dport=443, flags="S", seq=100, options=[("MSS", 1220)]))
    r = lab.send(LAN6, syn)
    assert r.out_iface == WAN6 and r.reason == "none"
    ip = IPv6(r.data)
    assert ip.src == ROUTER_WAN6 and ip.dst == SERVER6
    assert ip[TCP].sport == 40000  # the port is kept while free
    verify6(r.data)
    back = IPv6(src=SERVER6, dst=ROUTER_WAN6)
    r = lab.send(WAN6, bytes(back / TCP(sport=443, dport=40000, flags="SA", seq=900,
                                        ack=101)))
    assert r.out_iface == LAN6
    assert IPv6(r.data).dst == HOST6
    verify6(r.data)
    r = lab.send(LAN6, out6(TCP(sport=40000, dport=443, flags="A", seq=101, ack=901) /
                            Raw(b"GET / HTTP/1.0\r\n\r\n")))
    verify6(r.data)
    (e,) = lab.entries()
    assert e.family == 6 and e.state == "ESTABLISHED" and e.assured
    assert e.status & SRC_NAT
    assert e.src == (HOST6, SERVER6) and e.dst == (SERVER6, ROUTER_WAN6)
    assert lab.dp.counters()["found"] == 2


def test_udp_port_clash_gets_another_port_and_replies_find_their_host() -> None:
    lab = lab66()
    a = lab.send(LAN6, out6(UDP(sport=5353, dport=53) / Raw(b"a"), src=HOST6))
    b = lab.send(LAN6, out6(UDP(sport=5353, dport=53) / Raw(b"b"), src=HOST6B))
    pa, pb = IPv6(a.data)[UDP].sport, IPv6(b.data)[UDP].sport
    assert pa == 5353 and pb != 5353 and 1024 <= pb <= 65535
    assert pb % 2 == 1  # port parity kept (RFC 4787 REQ-4)
    for d in (a.data, b.data):
        verify6(d)
        assert IPv6(d).src == ROUTER_WAN6
    for port, host, payload in ((pb, HOST6B, b"to b"), (pa, HOST6, b"to a")):
        r = lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=ROUTER_WAN6) /
                                 UDP(sport=53, dport=port) / Raw(payload)))
        assert r.out_iface == LAN6
        ip = IPv6(r.data)
        assert ip.dst == host and ip[UDP].dport == 5353 and bytes(ip[Raw]) == payload
        verify6(r.data)


def test_echo_masqueraded_with_icmpv6_checksum_over_new_addresses() -> None:
    lab = lab66()
    r = lab.send(LAN6, out6(ICMPv6EchoRequest(id=77, seq=1, data=b"ping")))
    ip = IPv6(r.data)
    assert ip.src == ROUTER_WAN6 and r.data[40] == 128
    verify6(r.data)  # ICMPv6 sums the pseudo-header: the addresses changed
    ident = struct.unpack("!H", r.data[44:46])[0]
    # A second host with the same identifier gets another one.
    r2 = lab.send(LAN6, out6(ICMPv6EchoRequest(id=77, seq=1, data=b"ping"), src=HOST6B))
    ident2 = struct.unpack("!H", r2.data[44:46])[0]
    assert ident2 != ident
    verify6(r2.data)
    reply = IPv6(src=SERVER6, dst=ROUTER_WAN6) / ICMPv6EchoReply(id=ident2, seq=1, data=b"ping")
    r3 = lab.send(WAN6, bytes(reply))
    assert r3.out_iface == LAN6 and IPv6(r3.data).dst == HOST6B
    assert struct.unpack("!H", r3.data[44:46])[0] == 77
    verify6(r3.data)


def test_icmpv6_error_about_a_masqueraded_flow_reaches_the_inside_host() -> None:
    lab = lab66()
    sent = out6(UDP(sport=5000, dport=9) / Raw(b"x" * 100), src=HOST6B)
    lab.send(LAN6, out6(UDP(sport=5000, dport=9) / Raw(b"y"), src=HOST6))  # takes 5000
    r = lab.send(LAN6, sent)
    ext_port = IPv6(r.data)[UDP].sport
    assert ext_port != 5000
    for err in (ICMPv6DestUnreach(code=4), ICMPv6PacketTooBig(mtu=1280)):
        pkt = IPv6(src="2001:db8:2::99", dst=ROUTER_WAN6) / err / Raw(r.data)
        out = lab.send(WAN6, bytes(pkt))
        assert out.out_iface == LAN6 and out.reason == "none"
        ip = IPv6(out.data)
        assert ip.dst == HOST6B and ip.src == "2001:db8:2::99"  # from the reporter
        verify6(out.data)
        quote = out.data[48:]
        # The quote is what the host sent (the hop limit as forwarded),
        # its UDP checksum included.
        assert quote[:7] == sent[:7] and quote[8:] == sent[8:]
    assert lab.dp.counters()["related"] == 2
    # The error from the flow's own peer keeps coming from the peer.
    pkt = IPv6(src=SERVER6, dst=ROUTER_WAN6) / ICMPv6DestUnreach(code=4) / Raw(r.data)
    out = lab.send(WAN6, bytes(pkt))
    assert IPv6(out.data).src == SERVER6 and IPv6(out.data).dst == HOST6B
    verify6(out.data)


def test_unsolicited_inbound_to_the_router_address_is_not_forwarded() -> None:
    lab = lab66()
    lab.send(LAN6, out6(TCP(sport=40000, dport=443, flags="S", seq=1)))
    for pkt in (TCP(sport=443, dport=40001, flags="SA", seq=9, ack=2),   # no such port
                TCP(sport=444, dport=40000, flags="SA", seq=9, ack=2),   # other peer port
                UDP(sport=443, dport=40000)):
        r = lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=ROUTER_WAN6) / pkt))
        assert r.out_iface == -1
    # The router still answers its own echo.
    r = lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=ROUTER_WAN6) / ICMPv6EchoRequest(id=1)))
    assert r.out_iface == WAN6 and r.data[40] == 129


def test_sources_outside_the_rule_keep_their_address() -> None:
    lab = lab66('\n[[route]]\ndestination = "2001:db8:5::/64"\ninterface = "lan6"\n')
    r = lab.send(LAN6, out6(UDP(sport=1, dport=2), src="2001:db8:5::7"))
    assert r.out_iface == WAN6 and IPv6(r.data).src == "2001:db8:5::7"
    (e,) = lab.entries()
    assert not e.status & SRC_NAT


def test_nptv6_comes_before_masquerade() -> None:
    lab = lab66('''
[[nat.npt6]]
interface = "wan6"
inside = "2001:db8:1::/48"
outside = "2001:db8:abc::/48"
''')
    r = lab.send(LAN6, out6(UDP(sport=1, dport=2)))
    src = IPv6(r.data).src
    assert src.startswith("2001:db8:abc:") and src != ROUTER_WAN6
    verify6(r.data)


def test_port_exhaustion_answers_admin_prohibited() -> None:
    lab = lab66('''
[nat]
port_min = 2000
port_max = 2000
preserve_ports = false
''')
    assert lab.send(LAN6, out6(UDP(sport=7, dport=53), src=HOST6)).out_iface == WAN6
    r = lab.send(LAN6, out6(UDP(sport=7, dport=53), src=HOST6B))
    assert r.out_iface == LAN6 and r.data[40] == 1 and r.data[41] == 1
    assert IPv6(r.data).dst == HOST6B
    verify6(r.data)
    assert lab.dp.drops()["nat_no_port"] == 1


def ipv6_pseudo_sum(pkt: bytes) -> int:
    """The folded, uncomplemented pseudo-header sum a CHECKSUM_PARTIAL packet
    carries in its L4 checksum field."""
    hdr = pkt[8:40] + struct.pack("!IxxxB", len(pkt) - 40, pkt[6])
    return ~checksum(hdr) & 0xFFFF


def make_partial6(pkt: bytes, gso: Offload | None = None) -> tuple[bytes, Offload]:
    b = bytearray(pkt)
    off = 16 if b[6] == 6 else 6
    struct.pack_into("!H", b, 40 + off, ipv6_pseudo_sum(pkt))
    base = Offload(csum_flags=NEEDS_CSUM, csum_start=40, csum_offset=off)
    if gso:
        base = Offload(csum_flags=NEEDS_CSUM, csum_start=40, csum_offset=off,
                       gso_type=gso.gso_type, gso_size=gso.gso_size, hdr_len=gso.hdr_len)
    return bytes(b), base


def test_partial_checksum_and_tcpv6_gso_through_nat66() -> None:
    lab = lab66()
    lab.send(LAN6, out6(TCP(sport=41000, dport=80, flags="S", seq=1000)))
    lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=ROUTER_WAN6) /
                         TCP(sport=80, dport=41000, flags="SA", seq=5000, ack=1001)))
    # A 64 KB-class super-packet the kernel hands over with TSO6: 10 segments
    # of 1208 bytes under a partial checksum.
    full = out6(TCP(sport=41000, dport=80, flags="A", seq=1001, ack=5001) / Raw(b"z" * 12080))
    pkt, off = make_partial6(full, Offload(gso_type=GSO_TCPV6, gso_size=1208, hdr_len=60))
    (r,) = lab.dp.process([(LAN6, pkt, off)], lab.now)
    assert r.out_iface == WAN6 and r.reason == "none" and r.offload == off
    assert IPv6(r.data).src == ROUTER_WAN6
    # The field is the pseudo-header sum over the new addresses, and the
    # finished checksum is right.
    assert struct.unpack("!H", r.data[56:58])[0] == ipv6_pseudo_sum(r.data)
    verify6(finish_partial(r.data, r.offload))
    assert lab.dp.counters()["gso_segments"] == 10
    (e,) = lab.entries()
    assert e.packets[0] == 11  # SYN + 10 segments
    # The reply direction, partial too.
    back = bytes(IPv6(src=SERVER6, dst=ROUTER_WAN6) /
                 TCP(sport=80, dport=41000, flags="A", seq=5001, ack=13081))
    pkt, off = make_partial6(back)
    (r,) = lab.dp.process([(WAN6, pkt, off)], lab.now)
    assert r.out_iface == LAN6 and IPv6(r.data).dst == HOST6
    verify6(finish_partial(r.data, r.offload))


def test_gso_type_must_match_the_family() -> None:
    lab = lab66()
    full = out6(TCP(sport=41001, dport=80, flags="S") / Raw(b"z" * 3000))
    pkt, off = make_partial6(full, Offload(gso_type=GSO_TCPV4, gso_size=1000, hdr_len=60))
    (r,) = lab.dp.process([(LAN6, pkt, off)], lab.now)
    assert r.reason == "bad_offload"


def test_nat66_entry_survives_dump_and_restore() -> None:
    lab = lab66()
    lab.send(LAN6, out6(UDP(sport=6000, dport=53), src=HOST6))
    r = lab.send(LAN6, out6(UDP(sport=6000, dport=53), src=HOST6B))
    port = IPv6(r.data)[UDP].sport
    entries = lab.entries()
    lab.dp.flush(lab.now)
    for e in entries:
        assert lab.dp.restore(e, lab.now) == 0
    r = lab.send(WAN6, bytes(IPv6(src=SERVER6, dst=ROUTER_WAN6) / UDP(sport=53, dport=port)))
    assert r.out_iface == LAN6 and IPv6(r.data).dst == HOST6B and IPv6(r.data)[UDP].dport == 6000
    verify6(r.data)


def test_icmpv6_error_whose_quoted_header_chain_overruns_the_quote_is_safe() -> None:
    """An inside host's error about a reply it got, whose quote's destination
    options header claims 64 bytes but ends after 8: the quote's ports are
    absent (read as 0, which the flow has), and translating it back must not
    write the external port past the packet (AddressSanitizer caught a
    heap-buffer-overflow in set_l4_word here)."""
    lab = lab66()
    lab.send(LAN6, out6(UDP(sport=0, dport=0) / Raw(b"b"), src=HOST6B))  # takes port 0
    r = lab.send(LAN6, out6(UDP(sport=0, dport=0) / Raw(b"a"), src=HOST6))
    assert IPv6(r.data)[UDP].sport != 0
    hdr = bytes(IPv6(src=SERVER6, dst=HOST6, nh=60, hlim=63, plen=72))
    quote = hdr + bytes([17, 7]) + b"\x01\x06" + bytes(4)  # claims 64 bytes, has 8
    pkt = bytes(IPv6(src=HOST6, dst=SERVER6) / ICMPv6DestUnreach(code=4) / Raw(quote))
    out = lab.send(LAN6, pkt, exact=True)  # raises if written past the end
    assert out.reason == "none" and out.out_iface == WAN6  # RELATED, translated
    assert len(out.data) == len(pkt)
    assert out.data[48 + 40:] == quote[40:]  # the option bytes are not ports
    assert IPv6(out.data).src == ROUTER_WAN6
    assert out.data[48 + 24:48 + 40] == socket.inet_pton(socket.AF_INET6, ROUTER_WAN6)
    verify6(out.data)
