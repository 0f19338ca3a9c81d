"""Source NAT: bindings, port choice and collisions, rewrites and checksums."""

import struct

from tests.native.conftest import LAN, LAN_HOST, LAN_HOST2, ROUTER_WAN, SERVER, WAN, Lab, LabFactory
from tests.packets import ICMP, IP, TCP, UDP, Raw, checksum, verify_checksums


def udp_out(src: str = LAN_HOST, sport: int = 5000, dport: int = 53, payload: bytes = b"q",
            csum: int | None = None) -> bytes:
    u = UDP(sport=sport, dport=dport)
    if csum is not None:
        u.chksum = csum
    return bytes(IP(src=src, dst=SERVER) / u / Raw(payload))


def udp_in(dport: int, sport: int = 53, payload: bytes = b"a") -> bytes:
    return bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=sport, dport=dport) / Raw(payload))


def test_masquerade_keeps_free_port_and_translates_back(lab: Lab) -> None:
    r = lab.send(LAN, udp_out())
    assert r.out_iface == WAN
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.src == ROUTER_WAN and p[UDP].sport == 5000 and p.dst == SERVER
    assert p.ttl == 63

    r = lab.send(WAN, udp_in(5000))
    assert r.out_iface == LAN
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.dst == LAN_HOST and p[UDP].dport == 5000 and p.src == SERVER

    (e,) = lab.entries()
    assert e.src == (LAN_HOST, SERVER) and e.dst == (SERVER, ROUTER_WAN)
    assert e.sport == (5000, 53) and e.dport == (53, 5000)
    assert e.seen_reply


def test_port_collision_picks_another_port_in_range(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[nat]\nport_min = 20000\nport_max = 20099\n")
    a = IP(lab.send(LAN, udp_out(LAN_HOST, 5000)).data)
    b = IP(lab.send(LAN, udp_out(LAN_HOST2, 5000)).data)
    assert a[UDP].sport == 5000
    assert 20000 <= b[UDP].sport <= 20099
    verify_checksums(bytes(b))
    # Replies reach the right inside host.
    ra = IP(lab.send(WAN, udp_in(a[UDP].sport)).data)
    rb = IP(lab.send(WAN, udp_in(b[UDP].sport)).data)
    assert (ra.dst, ra[UDP].dport) == (LAN_HOST, 5000)
    assert (rb.dst, rb[UDP].dport) == (LAN_HOST2, 5000)
    c = lab.dp.counters()
    assert c["nat_port_search"] == 1 and 1 <= c["nat_port_probes"] <= 248


def test_preserve_ports_off_always_searches(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[nat]\npreserve_ports = false\nport_min = 30000\nport_max = 30010\n")
    p = IP(lab.send(LAN, udp_out()).data)
    assert 30000 <= p[UDP].sport <= 30010


def test_port_exhaustion_fails_cleanly(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[nat]\npreserve_ports = false\nport_min = 40000\nport_max = 40003\n")
    ports = set()
    for i in range(4):
        r = lab.send(LAN, udp_out(sport=6000 + i))
        assert r.out_iface == WAN
        ports.add(IP(r.data)[UDP].sport)
    assert ports == {40000, 40001, 40002, 40003}
    r = lab.send(LAN, udp_out(sport=7000))
    # Dropped, and the sender is told (RFC 5508 REQ-8: unreachable, code 13).
    assert r.out_iface == LAN and r.reason == "nat_no_port"
    err = IP(r.data)
    assert err.dst == LAN_HOST and err[ICMP].type == 3 and err[ICMP].code == 13
    verify_checksums(r.data)
    assert lab.dp.drops()["nat_no_port"] == 1
    assert lab.dp.counters()["nat_port_probes"] <= 4 * 248 + 248
    assert len(lab.entries()) == 4


def test_small_range_is_searched_whole(lab_factory: LabFactory) -> None:
    # Inside ports of one parity: the parity round finds only half the
    # range; the rest must still be used before a flow is refused.
    lab = lab_factory("\n[nat]\npreserve_ports = false\nport_min = 40000\nport_max = 40003\n")
    ports = set()
    for i in range(4):
        r = lab.send(LAN, udp_out(sport=6000 + 2 * i))
        assert r.out_iface == WAN, i
        ports.add(IP(r.data)[UDP].sport)
    assert ports == {40000, 40001, 40002, 40003}
    assert lab.send(LAN, udp_out(sport=7000)).reason == "nat_no_port"


def test_udp_zero_checksum_stays_zero(lab: Lab) -> None:
    r = lab.send(LAN, udp_out(csum=0))
    p = r.data
    assert struct.unpack("!H", p[26:28])[0] == 0
    verify_checksums(p)


def test_udp_checksum_that_becomes_zero_is_sent_as_ffff(lab: Lab) -> None:
    # Choose a 2-byte payload so that the translated datagram's one's
    # complement sum is 0xffff, i.e. its computed checksum is 0 (RFC 768).
    udp = struct.pack("!HHHH", 5000, 53, 10, 0) + b"\0\0"
    pseudo = bytes(IP(src=ROUTER_WAN, dst=SERVER))[12:20] + struct.pack("!BBH", 0, 17, 10)
    payload = struct.pack("!H", checksum(pseudo + udp))
    r = lab.send(LAN, udp_out(payload=payload))
    assert struct.unpack("!H", r.data[26:28])[0] == 0xFFFF
    verify_checksums(r.data)


def test_tcp_rewrite_checksums(lab: Lab) -> None:
    syn = bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=33333, dport=443, flags="S",
                                                  options=[("MSS", 1460)]))
    r = lab.send(LAN, syn)
    verify_checksums(r.data)
    assert IP(r.data).src == ROUTER_WAN


def test_icmp_echo_identifier_and_reply(lab: Lab) -> None:
    req = bytes(IP(src=LAN_HOST, dst=SERVER) / ICMP(type=8, id=77, seq=1) / Raw(b"ping"))
    r = lab.send(LAN, req)
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.src == ROUTER_WAN and p[ICMP].id == 77
    rep = bytes(IP(src=SERVER, dst=ROUTER_WAN) / ICMP(type=0, id=77, seq=1) / Raw(b"ping"))
    r = lab.send(WAN, rep)
    verify_checksums(r.data)
    p = IP(r.data)
    assert p.dst == LAN_HOST and p[ICMP].id == 77
    (e,) = lab.entries()
    assert e.proto == 1 and e.sport == (77, 77) and e.dport == (0x0800, 0x0000)


def test_icmp_identifier_collision_remapped(lab: Lab) -> None:
    def echo(src: str) -> bytes:
        return bytes(IP(src=src, dst=SERVER) / ICMP(type=8, id=9, seq=1))

    a = IP(lab.send(LAN, echo(LAN_HOST)).data)
    b = IP(lab.send(LAN, echo(LAN_HOST2)).data)
    assert a[ICMP].id == 9 and b[ICMP].id != 9
    verify_checksums(bytes(b))
    back = IP(lab.send(WAN, bytes(IP(src=SERVER, dst=ROUTER_WAN) /
                                  ICMP(type=0, id=b[ICMP].id, seq=1))).data)
    assert back.dst == LAN_HOST2 and back[ICMP].id == 9


def test_generic_protocol_address_only(lab: Lab) -> None:
    gre = bytes(IP(src=LAN_HOST, dst=SERVER, proto=47) / Raw(b"\x00\x00\x08\x00abcd"))
    r = lab.send(LAN, gre)
    assert r.out_iface == WAN
    verify_checksums(r.data)
    assert IP(r.data).src == ROUTER_WAN
    (e,) = lab.entries()
    assert e.proto == 47 and 599_000 < e.timeout_ms <= 600_000


def test_unsolicited_inbound_is_not_forwarded(lab: Lab) -> None:
    r = lab.send(WAN, bytes(IP(src=SERVER, dst=LAN_HOST) / TCP(sport=80, dport=22, flags="S")))
    assert r.out_iface == -1 and r.reason == "policy"
    r = lab.send(WAN, udp_in(5555))
    assert r.out_iface == -1 and r.reason == "local_unhandled"
    assert lab.entries() == []


def test_snat_to_fixed_address(lab_factory: LabFactory) -> None:
    lab = lab_factory('\n[[nat.snat]]\ninterface = "wan0"\nsources = ["192.168.1.3/32"]\n'
                      'to = "203.0.113.9"\n')
    a = IP(lab.send(LAN, udp_out(LAN_HOST)).data)
    b = IP(lab.send(LAN, udp_out(LAN_HOST2)).data)
    assert a.src == ROUTER_WAN and b.src == "203.0.113.9"
    back = IP(lab.send(WAN, bytes(IP(src=SERVER, dst="203.0.113.9") /
                                  UDP(sport=53, dport=5000))).data)
    assert back.dst == LAN_HOST2


def test_paired_address_pool(lab_factory: LabFactory) -> None:
    """RFC 4787 REQ-2: every flow of an inside host leaves from one address
    of the pool; hosts spread over the pool."""
    lab = lab_factory('\n[[nat.snat]]\ninterface = "wan0"\n'
                      'to = ["203.0.113.20", "203.0.113.21", "203.0.113.22"]\n')
    used = set()
    first = {}
    for host in range(2, 40):
        src = f"192.168.1.{host}"
        addrs = {IP(lab.send(LAN, bytes(IP(src=src, dst=f"198.51.100.{d}") /
                                       UDP(sport=1000 + d, dport=53))).data).src
                 for d in range(1, 6)}
        assert len(addrs) == 1, (src, addrs)  # paired
        first[src] = addrs.pop()
        used.add(first[src])
    assert used == {"203.0.113.20", "203.0.113.21", "203.0.113.22"}
    back = lab.send(WAN, bytes(IP(src="198.51.100.1", dst=first["192.168.1.2"]) /
                               UDP(sport=53, dport=1001)))
    assert back.out_iface == LAN and IP(back.data).dst == "192.168.1.2"


def test_masquerade_without_an_address_drops_never_leaks() -> None:
    """An interface with address = "dhcp" has none until its lease: a new
    connection masqueraded through it is dropped, never sent with its inside
    source address (and once the lease is there, it goes out translated)."""
    import dataclasses
    from ipaddress import IPv4Interface

    from router.config import parse
    from router.datapath import Datapath
    from router.tables import compile_tables
    from tests.native.conftest import BASE

    text = BASE.replace('address = "203.0.113.1/24"\nzone = "wan"',
                        'address = "dhcp"\nattach = "eth9"\nzone = "wan"')
    text = text.replace('gateway = "203.0.113.254"', 'interface = "wan0"')
    cfg = parse(text.encode(), "test.toml")
    dp = Datapath(capacity=64, batch=8, seed=1)
    dp.load(compile_tables(cfg, {}))
    lab = Lab(dp)
    r = lab.send(LAN, udp_out())
    assert r.out_iface == -1 and r.reason == "nat_no_address"
    assert lab.entries() == []
    leased = dataclasses.replace(cfg, interfaces=(
        cfg.interfaces[0], dataclasses.replace(cfg.interfaces[1],
                                               address=IPv4Interface("198.51.100.9/24"))))
    dp.load(compile_tables(leased, {}))
    r = lab.send(LAN, udp_out())
    assert r.out_iface == WAN and IP(r.data).src == "198.51.100.9"
