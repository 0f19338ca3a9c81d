"""Port forwarding (DNAT), full NAT and hairpin."""

from __future__ import annotations

from tests.native.conftest import (
    LAN,
    LAN_HOST,
    LAN_HOST2,
    ROUTER_LAN,
    ROUTER_WAN,
    WAN,
    Lab,
    LabFactory,
)
from tests.packets import IP, TCP, UDP, verify_checksums

CLIENT = "198.51.100.77"
FORWARDS = """
[[nat.forward]]
interface = "wan0"
protocol = "tcp"
port = 8080
to = "192.168.1.2"
to_port = 80

[[nat.forward]]
interface = "wan0"
protocol = "udp"
port = "5000-5009"
to = "192.168.1.3"
to_port = 6000

[[nat.forward]]
interface = "wan0"
protocol = "tcp"
port = 2222
to = "192.168.1.3"
to_port = 22
masquerade = true
"""


def lab_fw(lab_factory: LabFactory) -> Lab:
    return lab_factory(FORWARDS)  # type: ignore[no-any-return]


def test_port_forward_in_and_back(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    syn = bytes(IP(src=CLIENT, dst=ROUTER_WAN) / TCP(sport=40000, dport=8080, flags="S"))
    r = lab.send(WAN, syn)
    assert r.out_iface == LAN and r.reason == "none"  # allowed despite wan->lan policy
    verify_checksums(r.data)
    p = IP(r.data)
    assert (p.src, p.dst, p[TCP].sport, p[TCP].dport) == (CLIENT, LAN_HOST, 40000, 80)
    synack = bytes(IP(src=LAN_HOST, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA",
                                                     ack=1))
    r = lab.send(LAN, synack)
    assert r.out_iface == WAN
    verify_checksums(r.data)
    q = IP(r.data)
    assert (q.src, q[TCP].sport, q.dst) == (ROUTER_WAN, 8080, CLIENT)
    (e,) = lab.entries()
    assert e.dst == (ROUTER_WAN, CLIENT) and e.src == (CLIENT, LAN_HOST)
    assert e.sport == (40000, 80) and e.state == "SYN_RECV"


def test_port_range_maps_onto_range(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / UDP(sport=1, dport=5007)))
    p = IP(r.data)
    assert (p.dst, p[UDP].dport) == (LAN_HOST2, 6007)
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / UDP(sport=1, dport=5010)))
    assert r.out_iface == -1 and r.reason == "local_unhandled"  # outside the range


def test_unforwarded_port_and_protocol_stay_closed(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / UDP(sport=1, dport=8080)))
    assert r.out_iface == -1
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / TCP(sport=1, dport=8081,
                                                               flags="S")))
    assert r.out_iface == -1
    assert lab.entries() == []


def test_full_nat_backend_sees_router(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / TCP(sport=41000, dport=2222,
                                                               flags="S")))
    p = IP(r.data)
    assert (p.src, p.dst, p[TCP].dport) == (ROUTER_LAN, LAN_HOST2, 22)
    verify_checksums(r.data)
    back = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst=ROUTER_LAN) /
                               TCP(sport=22, dport=p[TCP].sport, flags="SA", ack=1)))
    q = IP(back.data)
    assert (q.src, q.dst, q[TCP].sport, q[TCP].dport) == (ROUTER_WAN, CLIENT, 2222, 41000)
    verify_checksums(back.data)


def test_hairpin_uses_the_external_address(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    # A LAN host reaches the forwarded port on the router's public address.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst=ROUTER_WAN) /
                            TCP(sport=42000, dport=8080, flags="S")))
    assert r.out_iface == LAN
    p = IP(r.data)
    # RFC 4787 REQ-9a: the server sees the client's external address.
    assert (p.src, p.dst, p[TCP].dport) == (ROUTER_WAN, LAN_HOST, 80)
    verify_checksums(r.data)
    back = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=ROUTER_WAN) /
                               TCP(sport=80, dport=p[TCP].sport, flags="SA", ack=1)))
    assert back.out_iface == LAN
    q = IP(back.data)
    assert (q.src, q.dst, q[TCP].sport, q[TCP].dport) == (ROUTER_WAN, LAN_HOST2, 8080, 42000)
    verify_checksums(back.data)


def test_icmp_error_about_a_forwarded_flow(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    # A WAN client reaches the forwarded UDP service; the server answers; the
    # client's host says "port unreachable" about that answer.
    lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / UDP(sport=3333, dport=5002)))
    r = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst=CLIENT) / UDP(sport=6002, dport=3333)))
    answer = r.data
    assert IP(answer).src == ROUTER_WAN
    from tests.packets import ICMP, Raw
    err = bytes(IP(src=CLIENT, dst=ROUTER_WAN) / ICMP(type=3, code=3) / Raw(answer))
    r = lab.send(WAN, err)
    assert r.out_iface == LAN and r.reason == "none"
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.dst == LAN_HOST2
    inner = IP(bytes(p[ICMP].payload))
    # The quoted packet is the server's answer as the server sent it.
    assert (inner.src, inner[UDP].sport, inner.dst, inner[UDP].dport) == (
        LAN_HOST2, 6002, CLIENT, 3333)
    verify_checksums(bytes(inner))
