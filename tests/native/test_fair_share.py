"""Fair share of the connection table (firewall.source_share): no source
may hold more than its share, and when the table is full a source under
its fair share (the table divided among the sources that have connections)
can still connect, at the expense of one over it."""

from __future__ import annotations

from tests.native.conftest import LAN, ROUTER_WAN, SERVER, WAN, Lab, make_lab
from tests.packets import IP, TCP, UDP

A, B, C = "192.168.1.2", "192.168.1.3", "192.168.1.4"


def assured(lab: Lab, src: str, sport: int) -> None:
    """A TCP connection through the handshake (ASSURED), or an assertion."""
    r = lab.send(LAN, bytes(IP(src=src, dst=SERVER) / TCP(sport=sport, dport=80, flags="S")))
    assert r.out_iface == WAN, r.reason
    ext = IP(r.data)[TCP].sport
    lab.send(WAN, bytes(IP(src=SERVER, dst=ROUTER_WAN) / TCP(sport=80, dport=ext, flags="SA",
                                                            ack=1)))
    lab.send(LAN, bytes(IP(src=src, dst=SERVER) / TCP(sport=sport, dport=80, flags="A",
                                                      seq=1, ack=1)))


def udp(lab: Lab, src: str, sport: int) -> str:
    return lab.send(LAN, bytes(IP(src=src, dst=SERVER) / UDP(sport=sport, dport=53))).reason


def per_source(lab: Lab) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in lab.entries():
        out[e.src[0]] = out.get(e.src[0], 0) + 1
    return out


def test_default_share_is_half_the_table() -> None:
    lab = make_lab(capacity=16)
    for i in range(8):
        assured(lab, A, 40000 + i)
    assert udp(lab, A, 5000) == "source_share"
    assert lab.dp.drops()["source_share"] == 1
    assert udp(lab, B, 5000) == "none"  # others are not affected


def test_a_host_that_filled_the_table_makes_room_for_another() -> None:
    """With no share cap (100 %), one host holding only ESTABLISHED
    connections filled the table and nobody else could connect."""
    lab = make_lab("\n[firewall]\nsource_share = 100\n", capacity=16)
    for i in range(16):
        assured(lab, A, 40000 + i)
    assert all(e.assured for e in lab.entries())
    assert udp(lab, A, 5000) == "source_share"  # 100 % is the whole table
    assert udp(lab, B, 5000) == "none"     # B is under: one of A's goes
    assert lab.dp.counters()["fair_evict"] == 1
    assert per_source(lab) == {A: 15, B: 1}


def test_hosts_at_their_fair_share_evict_nothing() -> None:
    lab = make_lab(capacity=16)
    for i in range(8):
        assured(lab, A, 40000 + i)
        assured(lab, B, 40000 + i)
    for i in range(5):  # fair share 16/3: A and B are over it
        assured(lab, C, 40000 + i)
    # C holds 5 of 16 now, its fair share: it can take no more from the others
    # (and nothing near is unassured for early drop).
    assert per_source(lab)[C] == 5
    assert udp(lab, C, 6000) == "ct_full"
    assert lab.dp.counters()["fair_evict"] == 5


def test_unassured_entries_of_the_heavy_source_go_first() -> None:
    lab = make_lab("\n[firewall]\nsource_share = 100\n", capacity=16)
    for i in range(8):
        assured(lab, A, 40000 + i)
    for i in range(8):
        assert udp(lab, A, 6000 + i) == "none"  # unreplied: not ASSURED
    assert udp(lab, B, 5000) == "none"
    assert sum(e.assured for e in lab.entries()) == 8  # an unreplied one went


def test_share_off_is_linux_behaviour() -> None:
    lab = make_lab("\n[firewall]\nsource_share = 0\n", capacity=16)
    for i in range(16):
        assured(lab, A, 40000 + i)
    assert udp(lab, B, 5000) == "ct_full"
    assert lab.dp.counters()["fair_evict"] == 0
