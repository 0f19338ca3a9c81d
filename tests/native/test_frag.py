"""Fragments of tracked flows: forwarded and NATed, in order and out of
order, with bounded memory and expiry (RFC 4787 REQ-14)."""

from __future__ import annotations

from tests.native.conftest import (
    LAN,
    LAN_HOST,
    ROUTER_LAN,
    ROUTER_WAN,
    SERVER,
    WAN,
    Lab,
    later_fragments_first,
)
from tests.packets import ICMP, IP, UDP, Raw, checksum, fragments4, reassemble4


def big_udp(payload: int = 3000, sport: int = 5000) -> object:
    return IP(src=LAN_HOST, dst=SERVER, id=4242) / UDP(sport=sport, dport=9000) / Raw(
        bytes(range(256)) * (payload // 256) + b"x" * (payload % 256))


def verify_udp(datagram: bytes) -> None:
    from tests.packets import verify_checksums
    verify_checksums(datagram)


def test_fragments_in_order_are_natted(lab: Lab) -> None:
    parts = fragments4(big_udp())
    assert len(parts) >= 5
    out = []
    for part in parts:
        r = lab.send(LAN, part)
        assert r.out_iface == WAN, r.reason
        out.append(r.data)
    for b in out:
        p = IP(b)
        assert p.src == ROUTER_WAN and p.dst == SERVER and p.ttl == 63
    whole = reassemble4(out)
    verify_udp(whole)  # the UDP checksum, fixed in the first fragment, fits the whole
    assert IP(whole)[UDP].sport == 5000
    c = lab.dp.counters()
    assert c["fragments"] == len(parts)
    (e,) = lab.entries()
    assert e.packets == (1, 0)  # conntrack saw the first fragment


def test_fragments_before_their_first_wait(lab: Lab) -> None:
    first, *later = fragments4(big_udp())
    verify_udp(reassemble4(later_fragments_first(lab, LAN, WAN, first, later)))


def test_reply_fragments_are_translated_back(lab: Lab) -> None:
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=5000, dport=9000)))
    reply = IP(src=SERVER, dst=ROUTER_WAN, id=77) / UDP(sport=9000, dport=5000) / Raw(
        b"r" * 2500)
    out = [lab.send(WAN, part) for part in fragments4(reply)]
    assert all(r.out_iface == LAN for r in out)
    whole = reassemble4([r.data for r in out])
    assert IP(whole).dst == LAN_HOST
    verify_udp(whole)


def test_big_ping_through_nat(lab: Lab) -> None:
    echo = IP(src=LAN_HOST, dst=SERVER, id=99) / ICMP(type=8, id=31, seq=1) / Raw(b"p" * 4000)
    out = [lab.send(LAN, part) for part in fragments4(echo, 1480)]
    assert all(r.out_iface == WAN for r in out)
    whole = reassemble4([r.data for r in out])
    assert checksum(bytes(IP(whole)[ICMP])) == 0


def test_unmatched_fragments_are_bounded_and_expire(lab: Lab) -> None:
    # 100 later fragments of datagrams whose first never comes: the pool
    # keeps 64, refuses the rest, and they expire.
    held = refused = 0
    for i in range(100):
        parts = fragments4(IP(src=LAN_HOST, dst=SERVER, id=1000 + i) / UDP() / Raw(b"z" * 1200))
        r = lab.send(LAN, parts[1])
        if r.reason == "none":
            held += 1
        else:
            assert r.reason == "fragment_no_room"
            refused += 1
    assert held == 64 and refused == 36
    lab.advance(31)
    r = lab.send(LAN, fragments4(IP(src=LAN_HOST, dst=SERVER, id=5000) / UDP() /
                            Raw(b"z" * 1200))[1])
    assert r.reason == "none"  # room again: the expired ones were dropped
    assert lab.dp.drops()["fragment_expired"] >= 1


def test_fragment_for_the_router_is_dropped(lab: Lab) -> None:
    parts = fragments4(IP(src=LAN_HOST, dst=ROUTER_LAN, id=7) / ICMP(type=8) / Raw(b"q" * 2000))
    r = lab.send(LAN, parts[0])
    assert r.out_iface == -1 and r.reason == "fragment"
    r = lab.send(LAN, parts[1])
    assert r.out_iface == -1  # no first fragment went anywhere: held, then expires


def test_first_fragment_policy_applies_to_all(lab: Lab) -> None:
    unsolicited = IP(src=SERVER, dst=LAN_HOST, id=8) / UDP(sport=1, dport=2) / Raw(b"w" * 2000)
    parts = fragments4(unsolicited)
    assert lab.send(WAN, parts[0]).reason == "policy"
    r = lab.send(WAN, parts[1])
    assert r.out_iface == -1
