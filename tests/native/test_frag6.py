"""IPv6 fragments of tracked flows: virtual reassembly as for IPv4 (the first
fragment goes through conntrack, the firewall and NAT66; later ones follow
it), in order and out of order, with hop limits, MTU and the router's own
address."""

from __future__ import annotations

from scapy.layers.inet import TCP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.packet import Raw  # type: ignore[import-untyped]

from tests.native.conftest import later_fragments_first, make_lab
from tests.native.test_ipv6 import HOST6, LAN6, ROUTER_LAN6, SERVER6, V6, WAN6, lab6, verify6
from tests.native.test_nat66 import MASQ, ROUTER_WAN6
from tests.packets import fragments6, reassemble6

PAYLOAD = bytes(range(256)) * 11 + b"tail"  # 2820 bytes: three fragments of <= 1280


def datagram(src: str = HOST6, dst: str = SERVER6, sport: int = 5000, ident: int = 99,
             hlim: int = 64) -> object:
    return IPv6(src=src, dst=dst, hlim=hlim) / IPv6ExtHdrFragment(id=ident) / \
        UDP(sport=sport, dport=9000) / Raw(PAYLOAD)


def test_fragments_in_order_are_forwarded_and_tracked() -> None:
    lab = lab6()
    parts = fragments6(datagram())
    assert len(parts) == 3
    out = []
    for part in parts:
        r = lab.send(LAN6, part)
        assert r.out_iface == WAN6 and r.reason == "none"
        assert r.data[7] == 63  # hop limit decremented on every fragment
        out.append(r.data)
    whole = reassemble6(out)
    verify6(whole)
    assert IPv6(whole)[UDP].sport == 5000 and bytes(IPv6(whole)[Raw]) == PAYLOAD
    assert lab.dp.counters()["fragments"] == 3
    (e,) = lab.entries()
    assert (e.proto, e.sport[0], e.dport[0]) == (17, 5000, 9000)
    assert e.packets == (1, 0)  # conntrack saw the first fragment


def test_fragments_before_their_first_wait_then_follow() -> None:
    lab = lab6()
    first, *later = fragments6(datagram(ident=7))
    out = later_fragments_first(lab, LAN6, WAN6, first, later)
    assert all(b[7] == 63 for b in out[1:])  # the held ones lost a hop too
    verify6(reassemble6(out))


def test_fragments_of_an_unsolicited_datagram_go_nowhere() -> None:
    lab = lab6()
    first, *later = fragments6(datagram(src=SERVER6, dst=HOST6, ident=8))
    assert lab.send(WAN6, first).reason == "policy"
    for part in later:
        r = lab.send(WAN6, part)
        assert r.out_iface == -1  # no first fragment went: they wait and expire
    lab.advance(31)
    lab.send(WAN6, fragments6(datagram(src=SERVER6, dst=HOST6, ident=9))[1])
    assert lab.dp.drops()["fragment_expired"] >= 1
    assert lab.dp.take_ready() == []


def test_nat66_fragments_out_and_back() -> None:
    lab = make_lab(V6 + MASQ)
    out = [lab.send(LAN6, part) for part in fragments6(datagram(ident=11))]
    assert all(r.out_iface == WAN6 for r in out)
    assert all(IPv6(r.data).src == ROUTER_WAN6 for r in out)
    whole = reassemble6([r.data for r in out])
    verify6(whole)  # the UDP checksum, updated in the first fragment, fits the whole
    port = IPv6(whole)[UDP].sport
    reply = IPv6(src=SERVER6, dst=ROUTER_WAN6) / IPv6ExtHdrFragment(id=12) / \
        UDP(sport=9000, dport=port) / Raw(PAYLOAD)
    back = [lab.send(WAN6, part) for part in fragments6(reply)]
    assert all(r.out_iface == LAN6 for r in back), [r.reason for r in back]
    assert all(IPv6(r.data).dst == HOST6 for r in back)
    whole = reassemble6([r.data for r in back])
    verify6(whole)
    assert IPv6(whole)[UDP].dport == 5000


def test_fragment_too_big_or_out_of_hops() -> None:
    lab = lab6()
    # wan6 has mtu 1280: fragments of 1400 bytes cannot leave there.
    first = fragments6(datagram(ident=13), size=1400)[0]
    r = lab.send(LAN6, first)
    assert r.reason == "too_big" and r.data[40] == 2  # packet too big, from the first
    first, second, *_ = fragments6(datagram(ident=14))
    assert lab.send(LAN6, first).out_iface == WAN6
    hop1 = bytearray(second)
    hop1[7] = 1
    assert lab.send(LAN6, bytes(hop1)).reason == "ttl_expired"
    # A later fragment larger than the next link: dropped, and its source
    # hears "packet too big" with the MTU (IPv6 routers never fragment).
    big = IPv6(src=HOST6, dst=SERVER6) / IPv6ExtHdrFragment(nh=17, offset=150, m=0, id=14) / \
        Raw(b"x" * 1400)
    r = lab.send(LAN6, bytes(big))
    assert r.reason == "too_big" and r.out_iface == LAN6
    err = IPv6(r.data)
    assert err.src == ROUTER_LAN6 and err.dst == HOST6 and r.data[40] == 2
    assert int.from_bytes(r.data[44:48], "big") == 1280
    verify6(r.data)


def test_fragments_for_the_router_itself_are_dropped() -> None:
    lab = lab6()
    ping = IPv6(src=HOST6, dst=ROUTER_LAN6) / IPv6ExtHdrFragment(id=15) / \
        ICMPv6EchoRequest(data=b"p" * 2000)
    first = fragments6(ping)[0]
    r = lab.send(LAN6, first)
    assert r.out_iface == -1 and r.reason == "fragment"


def test_atomic_fragment_is_a_whole_packet() -> None:
    lab = lab6()
    pkt = IPv6(src=HOST6, dst=SERVER6) / IPv6ExtHdrFragment(id=16) / \
        TCP(sport=40000, dport=443, flags="S")
    r = lab.send(LAN6, bytes(pkt))
    assert r.out_iface == WAN6
    (e,) = lab.entries()
    assert e.state == "SYN_SENT" and e.sport[0] == 40000




def test_error_quoting_a_first_fragment_is_related() -> None:
    """Path MTU discovery for fragmented datagrams: "packet too big" quotes
    the first fragment, fragment header and all."""
    lab = lab6()
    first = lab.send(LAN6, fragments6(datagram(ident=21))[0])
    assert first.out_iface == WAN6
    ptb = IPv6(src="2001:db8:2::99", dst=HOST6) / ICMPv6PacketTooBig(mtu=1280) / \
        Raw(first.data[:1232])
    r = lab.send(WAN6, bytes(ptb))
    assert r.out_iface == LAN6 and r.reason == "none"
    assert lab.dp.counters()["related"] == 1


def test_nat66_error_quoting_a_first_fragment_is_translated() -> None:
    lab = make_lab(V6 + MASQ)
    lab.send(LAN6, fragments6(datagram(ident=22, sport=5000))[0])  # takes port 5000
    sent = fragments6(datagram(src="2001:db8:1::3", ident=23, sport=5000))[0]
    out = lab.send(LAN6, sent)
    port = IPv6(out.data)[UDP].sport
    assert port != 5000
    ptb = IPv6(src="2001:db8:2::99", dst=ROUTER_WAN6) / ICMPv6PacketTooBig(mtu=1280) / \
        Raw(out.data[:1232])
    r = lab.send(WAN6, bytes(ptb))
    assert r.out_iface == LAN6 and IPv6(r.data).dst == "2001:db8:1::3"
    verify6(r.data)
    quote = r.data[48:]
    assert quote[8:40] == sent[8:40]  # addresses as the host sent them
    assert quote[48:50] == sent[48:50]  # and its source port, after the fragment header
