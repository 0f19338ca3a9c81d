"""Layer-4 load balancing in the data plane: spread, stickiness, reload."""

from __future__ import annotations

from collections import Counter

from router.config import parse
from router.tables import compile_tables
from tests.native.conftest import BASE, LAN, NO_SHARE, ROUTER_LAN, ROUTER_WAN, WAN, Lab, LabFactory
from tests.packets import IP, TCP, verify_checksums

CLIENT = "198.51.100.50"
LB = """
[[loadbalancer]]
name = "web"
interface = "wan0"
protocol = "tcp"
port = 80
{masq}
[[loadbalancer.backend]]
address = "192.168.1.10"
port = 8080
[[loadbalancer.backend]]
address = "192.168.1.11"
port = 8080
[[loadbalancer.backend]]
address = "192.168.1.12"
port = 8081
weight = 2
"""


def syn(sport: int) -> bytes:
    return bytes(IP(src=CLIENT, dst=ROUTER_WAN) / TCP(sport=sport, dport=80, flags="S"))


def test_new_connections_spread_by_weight(lab_factory: LabFactory) -> None:
    lab: Lab = lab_factory(LB.format(masq="") + NO_SHARE)  # 800 from one client
    seen: Counter[tuple[str, int]] = Counter()
    for sport in range(20000, 20800):
        r = lab.send(WAN, syn(sport))
        assert r.out_iface == LAN, r.reason
        verify_checksums(r.data)
        p = IP(r.data)
        assert p.src == CLIENT  # NAT mode: the backend sees the client
        seen[(p.dst, p[TCP].dport)] += 1
    assert set(seen) == {("192.168.1.10", 8080), ("192.168.1.11", 8080), ("192.168.1.12", 8081)}
    assert 0.4 < seen[("192.168.1.12", 8081)] / 800 < 0.6  # weight 2 of 4
    assert sorted(lab.dp.lb_stats()) == sorted(seen.values())


def test_a_connection_stays_on_its_backend_across_reload(lab_factory: LabFactory) -> None:
    lab: Lab = lab_factory(LB.format(masq=""))
    r = lab.send(WAN, syn(31000))
    backend = IP(r.data).dst
    # Reload without two of the three backends.
    text = BASE + LB.format(masq="")
    for n, addr in enumerate(("192.168.1.10", "192.168.1.11", "192.168.1.12")):
        if addr != backend:
            text = text.replace(f'address = "{addr}"', f'address = "192.168.1.9{n}"')
    lab.dp.load(compile_tables(parse(text.encode()), {}))
    # The handshake goes on with the same backend.
    reply_src = backend
    r = lab.send(LAN, bytes(IP(src=reply_src, dst=CLIENT) /
                            TCP(sport=IP(r.data)[TCP].dport, dport=31000, flags="SA", ack=1)))
    assert r.out_iface == WAN and IP(r.data).src == ROUTER_WAN
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) / TCP(sport=31000, dport=80,
                                                               flags="A", seq=1, ack=1)))
    assert IP(r.data).dst == backend


def test_full_nat_mode(lab_factory: LabFactory) -> None:
    lab: Lab = lab_factory(LB.format(masq="masquerade = true"))
    r = lab.send(WAN, syn(32000))
    p = IP(r.data)
    assert p.src == ROUTER_LAN and p.dst.startswith("192.168.1.1")
    verify_checksums(r.data)
