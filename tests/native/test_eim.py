"""Endpoint-independent mapping, filtering modes and port parity
(RFC 4787 REQ-1, REQ-3, REQ-4, REQ-8; RFC 5382 REQ-1)."""

from __future__ import annotations

from tests.native.conftest import LAN, LAN_HOST, LAN_HOST2, ROUTER_WAN, SERVER, WAN, Lab, LabFactory
from tests.packets import ICMP, IP, TCP, UDP, verify_checksums

SERVER2 = "198.51.100.20"
OTHER = "198.51.100.99"


def out(lab: Lab, src: str, sport: int, dst: str, dport: int = 3478) -> int:
    r = lab.send(LAN, bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport)))
    assert r.out_iface == WAN, r.reason
    p = IP(r.data)
    assert p.src == ROUTER_WAN
    return int(p[UDP].sport)


def inbound(lab: Lab, src: str, sport: int, dport: int):  # type: ignore[no-untyped-def]
    return lab.send(WAN, bytes(IP(src=src, dst=ROUTER_WAN) / UDP(sport=sport, dport=dport)))


def collided(lab: Lab) -> int:
    """LAN_HOST2 takes 5000 first; LAN_HOST:5000 then needs another port."""
    assert out(lab, LAN_HOST2, 5000, SERVER) == 5000
    x = out(lab, LAN_HOST, 5000, SERVER)
    assert x != 5000
    return x


def test_same_external_port_for_every_destination(lab: Lab) -> None:
    x = collided(lab)
    assert out(lab, LAN_HOST, 5000, SERVER2) == x
    assert out(lab, LAN_HOST, 5000, OTHER, 443) == x
    assert lab.dp.nat_mappings() == 2


def test_no_port_overloading(lab: Lab) -> None:
    x = collided(lab)
    # Another inside endpoint never gets x, even toward another destination.
    assert out(lab, LAN_HOST2, x, SERVER2) != x


def test_address_and_port_dependent_mapping_when_configured(lab_factory: LabFactory) -> None:
    lab = lab_factory('\n[nat]\nmapping = "address-and-port-dependent"\n')
    x = collided(lab)
    assert out(lab, LAN_HOST, 5000, SERVER2) == 5000 != x  # a new mapping per destination
    assert lab.dp.nat_mappings() == 0


def test_address_dependent_filtering(lab: Lab) -> None:
    x = collided(lab)
    # The server the inside endpoint talked to may answer from another port ...
    r = inbound(lab, SERVER, 9999, x)
    assert r.out_iface == LAN
    p = IP(r.data)
    assert (p.dst, p[UDP].dport, p.src, p[UDP].sport) == (LAN_HOST, 5000, SERVER, 9999)
    verify_checksums(r.data)
    # ... an address it never talked to may not.
    r = inbound(lab, OTHER, 3478, x)
    assert r.out_iface == -1 and r.reason == "local_unhandled"
    assert lab.dp.counters()["nat_map_inbound"] == 1


def test_endpoint_independent_filtering(lab_factory: LabFactory) -> None:
    lab = lab_factory('\n[nat]\nfiltering = "endpoint-independent"\n')
    x = collided(lab)
    r = inbound(lab, OTHER, 1234, x)
    assert r.out_iface == LAN and IP(r.data).dst == LAN_HOST
    # The reply goes back out with the mapped port.
    back = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=OTHER) / UDP(sport=5000, dport=1234)))
    q = IP(back.data)
    assert (q.src, q[UDP].sport) == (ROUTER_WAN, x)


def test_address_and_port_dependent_filtering(lab_factory: LabFactory) -> None:
    lab = lab_factory('\n[nat]\nfiltering = "address-and-port-dependent"\n')
    x = collided(lab)
    assert inbound(lab, SERVER, 9999, x).out_iface == -1
    r = inbound(lab, SERVER, 3478, x)  # the exact endpoint: a reply
    assert r.out_iface == LAN


def test_mapping_ends_with_its_last_connection(lab: Lab) -> None:
    x = collided(lab)
    out(lab, LAN_HOST, 5000, SERVER2)
    assert lab.dp.nat_mappings() == 2
    lab.advance(121)
    lab.dp.sweep(lab.now, 1000)
    assert lab.dp.count() == 0 and lab.dp.nat_mappings() == 0
    # The port is free again; the inside endpoint keeps its own port now.
    assert out(lab, LAN_HOST, 5000, SERVER) == 5000
    assert inbound(lab, SERVER, 9999, x).out_iface == -1


def test_expired_mapping_is_gone_before_any_sweep(lab_factory: LabFactory) -> None:
    """An expired connection the sweep has not reached yet neither lets
    inbound packets through its mapping nor keeps its external port (one
    used to arrive an hour after expiry)."""
    lab = lab_factory('\n[nat]\nfiltering = "endpoint-independent"\n')
    x = collided(lab)
    out(lab, LAN_HOST, 5000, SERVER2)  # two connections on the mapping
    assert inbound(lab, OTHER, 1234, x).out_iface == LAN  # a third, inbound
    lab.advance(3600)  # no sweep
    r = inbound(lab, OTHER, 4321, x)
    assert r.out_iface == -1 and r.reason == "local_unhandled"
    assert lab.dp.nat_mappings() == 1  # LAN_HOST2's, not met yet
    assert lab.dp.count() == 1
    # The port is free: another inside endpoint may take it.
    assert out(lab, LAN_HOST2, x, SERVER) == x
    assert lab.dp.nat_mappings() == 2


def test_a_live_connection_keeps_its_mapping_when_another_expired(lab_factory: LabFactory) -> None:
    lab = lab_factory('\n[nat]\nfiltering = "endpoint-independent"\n')
    x = collided(lab)
    lab.advance(100)
    assert out(lab, LAN_HOST, 5000, SERVER2) == x  # newer, live longer
    lab.advance(60)  # the first one expired, the second did not
    r = inbound(lab, OTHER, 1234, x)
    assert r.out_iface == LAN and IP(r.data).dst == LAN_HOST


def test_tcp_mapping_and_inbound_syn(lab: Lab) -> None:
    def syn(src: str, dst: str, sport: int, dport: int) -> bytes:
        return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S"))

    lab.send(LAN, syn(LAN_HOST2, SERVER, 6000, 443))
    r = lab.send(LAN, syn(LAN_HOST, SERVER, 6000, 443))
    x = IP(r.data)[TCP].sport
    r = lab.send(LAN, syn(LAN_HOST, SERVER2, 6000, 80))
    assert IP(r.data)[TCP].sport == x  # RFC 5382 REQ-1
    # A SYN from the contacted server to the mapped port reaches the inside host
    # (TCP simultaneous open, as hole punching uses).
    r = lab.send(WAN, syn(SERVER, ROUTER_WAN, 7777, x))
    assert r.out_iface == LAN and IP(r.data)[TCP].dport == 6000


def test_icmp_identifier_mapping_is_endpoint_independent(lab: Lab) -> None:
    def echo(src: str, dst: str) -> int:
        r = lab.send(LAN, bytes(IP(src=src, dst=dst) / ICMP(type=8, id=33)))
        return int(IP(r.data)[ICMP].id)

    assert echo(LAN_HOST2, SERVER) == 33
    y = echo(LAN_HOST, SERVER)
    assert y != 33 and echo(LAN_HOST, SERVER2) == y  # RFC 5508 REQ-1a


def test_port_parity_preserved_when_searching(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[nat]\npreserve_ports = false\nport_min = 20000\nport_max = 20199\n")
    for sport in range(7000, 7040):
        x = out(lab, LAN_HOST, sport, SERVER)
        assert 20000 <= x <= 20199
        assert x % 2 == sport % 2, (sport, x)
