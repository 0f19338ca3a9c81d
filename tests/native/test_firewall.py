"""Firewall rules, reject, the input chain and reverse-path filtering."""

from __future__ import annotations

from tests.native.conftest import (
    LAN,
    LAN_HOST,
    LAN_HOST2,
    ROUTER_LAN,
    ROUTER_WAN,
    SERVER,
    WAN,
    Lab,
    LabFactory,
)
from tests.packets import ICMP, IP, TCP, UDP, Raw, verify_checksums

RULES = """
[firewall]
input = "accept"

[[firewall.rule]]
from = "lan"
protocol = "tcp"
port = 25
action = "reject"
comment = "no mail from the LAN"

[[firewall.rule]]
from = "lan"
destination = "198.51.100.66/32"
action = "drop"

[[firewall.rule]]
from = "lan"
protocol = "udp"
port = "5000-5010"
action = "reject"

[[firewall.rule]]
from = "wan"
to = "lan"
protocol = "tcp"
destination = "192.168.1.3/32"
port = 22
action = "accept"

[[firewall.rule]]
chain = "input"
from = "wan"
protocol = "icmp"
icmp_type = 8
action = "drop"

[[firewall.rule]]
protocol = "tcp"
port = 8443
state = ["established"]
action = "drop"
"""


def lab_fw(lab_factory: LabFactory) -> Lab:
    return lab_factory(RULES)


def test_reject_tcp_with_rst(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    syn = bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=40000, dport=25, flags="S", seq=1000))
    r = lab.send(LAN, syn)
    assert r.reason == "firewall_reject" and r.out_iface == LAN
    verify_checksums(r.data)
    p = IP(r.data)
    assert (p.src, p.dst) == (SERVER, LAN_HOST)  # as if from the destination
    t = p[TCP]
    assert (t.sport, t.dport, t.flags, t.ack, t.seq) == (25, 40000, "RA", 1001, 0)
    assert lab.entries() == []
    assert lab.dp.fw_stats()[0] == (1, len(syn))


def test_reject_udp_with_admin_prohibited(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=5005)))
    assert r.reason == "firewall_reject"
    p = IP(r.data)
    assert p.src == ROUTER_LAN and p[ICMP].type == 3 and p[ICMP].code == 13
    verify_checksums(r.data)
    # Outside the range: allowed (lan -> wan policy).
    assert lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                               UDP(sport=1, dport=5011))).out_iface == WAN


def test_drop_by_destination(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst="198.51.100.66") / ICMP()))
    assert (r.out_iface, r.reason) == (-1, "firewall_drop")
    assert lab.dp.drops()["firewall_drop"] == 1


def test_accept_rule_opens_a_hole_in_the_zone_policy(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    ok = bytes(IP(src=SERVER, dst=LAN_HOST2) / TCP(sport=5555, dport=22, flags="S"))
    assert lab.send(WAN, ok).out_iface == LAN
    other = bytes(IP(src=SERVER, dst=LAN_HOST) / TCP(sport=5555, dport=22, flags="S"))
    assert lab.send(WAN, other).reason == "policy"


def test_input_chain(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    ping = bytes(IP(src=SERVER, dst=ROUTER_WAN) / ICMP(type=8))
    assert lab.send(WAN, ping).reason == "firewall_drop"
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=ROUTER_LAN) / ICMP(type=8)))
    assert r.out_iface == LAN and IP(r.data)[ICMP].type == 0


def test_input_default_reject(lab_factory: LabFactory) -> None:
    lab = lab_factory('\n[firewall]\ninput = "reject"\n')
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=ROUTER_LAN) / TCP(sport=1, dport=22,
                                                                  flags="S")))
    assert r.reason == "firewall_reject" and IP(r.data)[TCP].flags == "RA"


def test_rule_on_established_packets(lab_factory: LabFactory) -> None:
    lab = lab_fw(lab_factory)
    # The SYN passes (the rule names only established packets) ...
    assert lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                               TCP(sport=40001, dport=8443, flags="S"))).out_iface == WAN
    # ... and so does the answer (its destination port is the client's) ...
    r = lab.send(WAN, bytes(IP(src=SERVER, dst=ROUTER_WAN) /
                            TCP(sport=8443, dport=40001, flags="SA", ack=1)))
    assert r.out_iface == LAN
    # ... but the client's next packet to port 8443 is established: dropped.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                            TCP(sport=40001, dport=8443, flags="A", seq=1, ack=1)))
    assert r.reason == "firewall_drop"


def spoof(src: str) -> bytes:
    return bytes(IP(src=src, dst=SERVER) / UDP(sport=1, dport=2) / Raw(b"x"))


def test_strict_reverse_path_filter(lab_factory: LabFactory) -> None:
    lab = lab_factory()
    r = lab.send(LAN, spoof("198.51.100.200"))  # a WAN address, from the LAN
    assert (r.out_iface, r.reason) == (-1, "spoofed_source")
    r = lab.send(WAN, bytes(IP(src=LAN_HOST, dst=ROUTER_WAN) / UDP()))  # a LAN address, from WAN
    assert r.reason == "spoofed_source"
    assert lab.dp.drops()["spoofed_source"] == 2


def test_loose_and_off(lab_factory: LabFactory) -> None:
    from router.config import parse
    from router.tables import compile_tables
    from tests.native.conftest import BASE

    lab = lab_factory()
    loose = BASE.replace('zone = "lan"', 'zone = "lan"\nrp_filter = "loose"')
    lab.dp.load(compile_tables(parse(loose.encode()), {}))
    assert lab.send(LAN, spoof("198.51.100.200")).out_iface == WAN  # routable at all
    off = BASE.replace('zone = "lan"', 'zone = "lan"\nrp_filter = "off"')
    lab.dp.load(compile_tables(parse(off.encode()), {}))
    assert lab.send(LAN, spoof("10.77.0.1")).out_iface == WAN


def test_icmp_errors_are_rate_limited(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[firewall]\nicmp_rate = 10\n")

    def expire_ttl() -> bool:
        r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER, ttl=1) / UDP(sport=1, dport=2)))
        assert r.reason == "ttl_expired"
        return r.out_iface == LAN

    sent = sum(expire_ttl() for _ in range(30))
    assert sent == 10  # a full bucket, then nothing
    assert lab.dp.counters()["icmp_rate_limited"] == 20
    lab.advance(0.5)  # five tokens back
    assert sum(expire_ttl() for _ in range(10)) == 5


def test_connection_cap_per_source(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[firewall]\nmax_connections_per_source = 5\n")

    def new(src: str, sport: int) -> str:
        r = lab.send(LAN, bytes(IP(src=src, dst=SERVER) / UDP(sport=sport, dport=53)))
        return str(r.reason)

    assert [new(LAN_HOST, 1000 + i) for i in range(7)] == ["none"] * 5 + [
        "source_conn_limit"] * 2
    assert new(LAN_HOST2, 1000) == "none"  # other hosts still can
    # Its connections expire: the host may open new ones again.
    lab.advance(121)
    lab.dp.sweep(lab.now, 1000)
    assert new(LAN_HOST, 2000) == "none"
    assert lab.dp.drops()["source_conn_limit"] == 2


def test_new_connection_rate_per_source(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[firewall]\nnew_connections_per_source = 10\n")
    reasons = [lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                                   UDP(sport=3000 + i, dport=53))).reason for i in range(15)]
    assert reasons.count("none") == 10 and reasons.count("source_rate_limit") == 5
    # Packets of existing connections are not limited.
    assert lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                               UDP(sport=3000, dport=53))).reason == "none"
    lab.advance(0.3)  # three more
    more = [lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                                UDP(sport=4000 + i, dport=53))).reason for i in range(5)]
    assert more.count("none") == 3


def test_rate_limits_hold_when_batches_come_out_of_time_order(lab_factory: LabFactory) -> None:
    """Workers read the clock when they wake, so a batch may carry a time a
    millisecond older than the batch another worker just processed.  The
    token buckets must not take that as a clock that wrapped and refill."""
    lab = lab_factory("\n[firewall]\nicmp_rate = 10\nnew_connections_per_source = 10\n")

    def expired_answered() -> bool:
        r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER, ttl=1) / UDP(sport=1, dport=2)))
        return r.out_iface == LAN

    def new(sport: int) -> str:
        return str(lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) /
                                       UDP(sport=sport, dport=53))).reason)

    assert sum(expired_answered() for _ in range(12)) == 10
    assert [new(5000 + i) for i in range(12)].count("none") == 10
    lab.now -= 1  # the next batch read the clock a moment earlier
    assert sum(expired_answered() for _ in range(5)) == 0
    assert [new(6000 + i) for i in range(5)] == ["source_rate_limit"] * 5
