"""Mappings LAN hosts ask for (PCP, NAT-PMP, UPnP IGD) in the C core: a
pinned NAT44 mapping lets the WAN in like a port forward and is its inside
endpoint's outbound mapping; filters admit only the named peers; an IPv6
pinhole opens one inside endpoint and nothing else."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from scapy.layers.inet6 import IPv6  # type: ignore[import-untyped]

from router.datapath import PM_FORWARD, PM_FREE, PM_TAKEN, DatapathError, Pin
from tests.native.conftest import LAN, LAN_HOST, LAN_HOST2, ROUTER_WAN, WAN, Lab, make_lab
from tests.native.test_ipv6 import HOST6, LAN6, V6, WAN6
from tests.packets import IP, TCP, UDP, verify_checksums

PEER = "198.51.100.77"
OTHER = "198.51.100.78"
PEER6 = "2001:db8:9::77"
FORWARD = """
[[nat.forward]]
interface = "wan0"
protocol = "tcp"
port = 8080
to = "192.168.1.3"
to_port = 80
"""


def pin(port: int = 6000, host: str = LAN_HOST, int_port: int = 6000, proto: int = 17,
        filters: tuple = ()) -> Pin:  # type: ignore[type-arg]
    return Pin(proto=proto, iface=WAN, int_addr=IPv4Address(host), int_port=int_port,
               ext_port=port, filters=filters)


def inbound(lab: Lab, port: int, src: str = PEER, sport: int = 5555):  # type: ignore[no-untyped-def]
    return lab.send(WAN, bytes(IP(src=src, dst=ROUTER_WAN) / UDP(sport=sport, dport=port)))


def test_a_pinned_mapping_lets_the_wan_in_and_replies_out() -> None:
    lab = make_lab(FORWARD)
    lab.dp.set_portmaps([pin(7000, int_port=6000)])
    r = inbound(lab, 7000)
    assert r.reason == "none" and r.out_iface == LAN  # despite the wan->lan policy
    verify_checksums(r.data)
    p = IP(r.data)
    assert (p.src, p.dst, p[UDP].dport) == (PEER, LAN_HOST, 6000)
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=PEER) / UDP(sport=6000, dport=5555)))
    q = IP(r.data)
    assert (q.src, q[UDP].sport) == (ROUTER_WAN, 7000)
    assert lab.dp.counters()["portmap_inbound"] == 1


def test_it_is_the_inside_endpoints_outbound_mapping() -> None:
    """RFC 6887 MAP semantics: a new flow from the inside endpoint to any
    peer leaves with the mapped port, not a port of its own."""
    lab = make_lab()
    lab.dp.set_portmaps([pin(7001, int_port=6000)])
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst="198.51.100.9") / UDP(sport=6000, dport=53)))
    assert IP(r.data)[UDP].sport == 7001
    verify_checksums(r.data)
    # Another inside endpoint never gets the pinned port, even asking for it.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst="198.51.100.9") / UDP(sport=7001, dport=53)))
    assert IP(r.data)[UDP].sport != 7001


def test_hairpin_through_a_pinned_mapping() -> None:
    lab = make_lab()
    lab.dp.set_portmaps([pin(7002, int_port=6000)])
    r = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst=ROUTER_WAN) / UDP(sport=4000, dport=7002)))
    assert r.out_iface == LAN
    p = IP(r.data)
    assert (p.src, p.dst, p[UDP].dport) == (ROUTER_WAN, LAN_HOST, 6000)


def test_filters_admit_only_the_named_peer() -> None:
    lab = make_lab()
    only = ((IPv4Network(PEER + "/32"), 5555),)
    lab.dp.set_portmaps([pin(7003, filters=only)])
    assert inbound(lab, 7003, src=OTHER).out_iface != LAN
    assert inbound(lab, 7003, src=PEER, sport=5556).out_iface != LAN  # the port too
    assert inbound(lab, 7003, src=PEER).out_iface == LAN
    wide = ((IPv4Network("198.51.100.0/24"), 0),)
    lab.dp.set_portmaps([pin(7003, filters=wide)])
    assert inbound(lab, 7003, src=OTHER, sport=9).out_iface == LAN


def test_a_removed_mapping_lets_nothing_new_in() -> None:
    lab = make_lab()
    lab.dp.set_portmaps([pin(7004)])
    assert inbound(lab, 7004).out_iface == LAN
    lab.dp.set_portmaps([])
    r = inbound(lab, 7004, src=OTHER)
    assert r.out_iface == -1 and r.reason == "local_unhandled"


def test_the_mapping_follows_the_interface_address() -> None:
    """The external address is the interface's, read per packet: a WAN
    renumbering moves the mapping with it."""
    lab = make_lab()
    lab.dp.set_portmaps([pin(7005)])
    r = lab.send(WAN, bytes(IP(src=PEER, dst="203.0.113.2") / UDP(sport=1, dport=7005)))
    assert r.out_iface != LAN  # not the interface's address


def test_bad_tables_are_refused_whole() -> None:
    lab = make_lab()
    lab.dp.set_portmaps([pin(7006)])
    with pytest.raises(DatapathError, match="outside or inside endpoint"):
        lab.dp.set_portmaps([pin(7007), pin(7007, host=LAN_HOST2)])
    with pytest.raises(DatapathError, match="outside or inside endpoint"):
        lab.dp.set_portmaps([pin(7007), pin(7008)])  # one inside endpoint, two ports
    with pytest.raises(DatapathError, match="interface"):
        lab.dp.set_portmaps([Pin(proto=17, iface=9, int_addr=IPv4Address(LAN_HOST),
                                 int_port=1, ext_port=1)])
    with pytest.raises(DatapathError, match="protocol"):
        lab.dp.set_portmaps([pin(7007, proto=1)])
    with pytest.raises(DatapathError, match="port 0"):
        lab.dp.set_portmaps([pin(0)])
    assert inbound(lab, 7006).out_iface == LAN  # the old table stayed


def test_probe_tells_what_holds_a_port() -> None:
    lab = make_lab(FORWARD)
    now = lab.now
    assert lab.dp.portmap_probe(pin(8080, proto=6), now) == (PM_FORWARD, 0)
    assert lab.dp.portmap_probe(pin(7010), now) == (PM_FREE, 0)
    # A live outbound mapping of another inside endpoint holds its port ...
    r = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst=PEER) / UDP(sport=4444, dport=53)))
    held = IP(r.data)[UDP].sport
    assert lab.dp.portmap_probe(pin(held), now) == (PM_TAKEN, 0)
    # ... and its own endpoint learns the port it has.
    assert lab.dp.portmap_probe(pin(7010, host=LAN_HOST2, int_port=4444), now) == (PM_FREE, held)
    lab.dp.set_portmaps([pin(7011)])
    assert lab.dp.portmap_probe(pin(7011, host=LAN_HOST2), now)[0] == PM_TAKEN
    assert lab.dp.portmap_probe(pin(7011), now)[0] == PM_FREE  # its own


def test_restored_connection_needs_its_mapping() -> None:
    lab = make_lab()
    lab.dp.set_portmaps([pin(7012)])
    assert inbound(lab, 7012).out_iface == LAN
    (e,) = lab.entries()
    again = make_lab()
    assert again.dp.restore(e, again.now) != 0  # no mapping: not restored
    again.dp.set_portmaps([pin(7012)])
    assert again.dp.restore(e, again.now) == 0


def pinhole(port: int = 443, filters: tuple = ()) -> Pin:  # type: ignore[type-arg]
    return Pin(proto=6, iface=WAN6, int_addr=IPv6Address(HOST6), int_port=port,
               filters=filters)


def syn6(dst: str = HOST6, port: int = 443, src: str = PEER6) -> bytes:
    return bytes(IPv6(src=src, dst=dst) / TCP(sport=40000, dport=port, flags="S"))


def test_an_ipv6_pinhole_opens_one_endpoint_only() -> None:
    lab = make_lab(V6 + '\n[firewall]\nforward = "drop"\n')
    assert lab.send(WAN6, syn6()).reason == "policy"
    lab.dp.set_portmaps([pinhole()])
    r = lab.send(WAN6, syn6())
    assert r.out_iface == LAN6 and r.reason == "none"
    assert IPv6(r.data).dst == HOST6  # no translation
    assert lab.send(WAN6, syn6(port=444)).reason == "policy"
    assert lab.send(WAN6, syn6(dst="2001:db8:1::3")).reason == "policy"
    out = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=PEER) / TCP(dport=1, flags="S")))
    assert out.out_iface == WAN
    assert lab.dp.counters()["portmap_inbound"] == 1


def test_an_ipv6_pinhole_honours_its_filter() -> None:
    lab = make_lab(V6)
    lab.dp.set_portmaps([pinhole(filters=((IPv6Network(PEER6 + "/128"), 0),))])
    assert lab.send(WAN6, syn6(src="2001:db8:9::78")).reason == "policy"
    assert lab.send(WAN6, syn6()).out_iface == LAN6
