"""Config to C tables: numbering, connected routes, gateways, NAT, policy."""

from ipaddress import IPv4Address, IPv4Network

from router.config import parse
from router.native.names import TIMEOUT_NAMES
from router.tables import compile_tables
from tests.helpers import TWO_LINKS

CFG = TWO_LINKS + """mtu = 1400
[[interface]]
name = "dmz0"
address = "10.9.0.1/24"
zone = "lan"
[[route]]
destination = "0.0.0.0/0"
gateway = "203.0.113.254"
[[route]]
destination = "172.16.0.0/12"
interface = "dmz0"
[nat]
port_min = 2000
port_max = 3000
[[nat.masquerade]]
interface = "wan0"
sources = ["192.168.1.0/24", "10.9.0.0/24"]
[[nat.snat]]
interface = "wan0"
to = "203.0.113.7"
sources = ["192.168.1.99/32"]
[firewall]
forward = "drop"
[[firewall.policy]]
from = "lan"
to = "wan"
action = "accept"
[conntrack.timeouts]
udp = 99
"""


def test_compile() -> None:
    t = compile_tables(parse(CFG.encode()), {"lan0": 5, "wan0": 6})
    assert [i.fd for i in t.ifaces] == [5, 6, -1]
    assert [i.zone for i in t.ifaces] == [0, 1, 0]
    assert t.zones == ("lan", "wan")
    assert t.ifaces[1].mtu == 1400 and t.ifaces[1].addr == IPv4Address("203.0.113.1")
    routes = [(str(r.prefix), r.iface, r.gateway) for r in t.routes]
    assert routes == [
        ("192.168.1.0/24", 0, None), ("203.0.113.0/24", 1, None), ("10.9.0.0/24", 2, None),
        ("0.0.0.0/0", 1, IPv4Address("203.0.113.254")), ("172.16.0.0/12", 2, None)]
    # snat rules come before masquerade; one entry per source prefix
    assert [(str(n.sources), n.out_iface, n.to) for n in t.nat] == [
        ("192.168.1.99/32", 1, IPv4Address("203.0.113.7")),
        ("192.168.1.0/24", 1, None), ("10.9.0.0/24", 1, None)]
    assert t.policy == ((False, True), (False, False))
    assert t.timeouts[TIMEOUT_NAMES.index("udp")] == 99
    assert (t.port_min, t.port_max) == (2000, 3000)
    assert t.nat[1].sources == IPv4Network("192.168.1.0/24")


def test_forward_accept_default() -> None:
    t = compile_tables(parse((CFG.replace('forward = "drop"', 'forward = "accept"')).encode()),
                       {})
    assert t.policy == ((True, True), (True, True))
