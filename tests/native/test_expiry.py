"""Expiry with a fake clock, garbage collection, and a full table."""

from tests.native.conftest import LAN, LAN_HOST, NO_SHARE, ROUTER_WAN, SERVER, WAN, Lab, LabFactory
from tests.packets import IP, TCP, UDP


def udp(src: str = LAN_HOST, sport: int = 5000) -> bytes:
    return bytes(IP(src=src, dst=SERVER) / UDP(sport=sport, dport=53))


def udp_reply(dport: int = 5000) -> bytes:
    return bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=53, dport=dport))


def test_udp_unreplied_expires_after_120s(lab: Lab) -> None:
    lab.send(LAN, udp())
    lab.advance(119.9)
    assert len(lab.entries()) == 1
    lab.advance(0.2)
    assert lab.entries() == []  # a dump never shows an expired entry
    assert lab.dp.count() == 1  # ... but it is still there until swept
    r = lab.dp.sweep(lab.now, 10_000)
    assert r.expired == 1 and r.count == 0 and r.wrapped


def test_udp_stream_gets_longer_timeout_and_assured(lab: Lab) -> None:
    lab.send(LAN, udp())
    lab.send(WAN, udp_reply())
    (e,) = lab.entries()
    assert not e.assured and e.timeout_ms <= 120_000
    lab.advance(3)
    lab.send(LAN, udp())
    (e,) = lab.entries()
    assert e.assured and 299_000 < e.timeout_ms <= 300_000


def test_expired_entry_is_replaced_on_lookup(lab: Lab) -> None:
    lab.send(LAN, udp())
    lab.advance(121)
    # A reply after expiry finds nothing and is not forwarded.
    r = lab.send(WAN, udp_reply())
    assert r.out_iface == -1
    assert lab.dp.counters()["expired"] == 1
    # A new outbound packet creates a fresh entry.
    lab.send(LAN, udp())
    (e,) = lab.entries()
    assert e.packets == (1, 0)


def test_configured_timeouts_apply(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[conntrack.timeouts]\nudp = 5\ntcp_syn_sent = 7\n")
    lab.send(LAN, udp())
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=1234, dport=80, flags="S")))
    t = sorted(e.timeout_ms for e in lab.entries())
    assert t == [5000, 7000]


def test_sweep_is_bounded_and_resumes(lab_factory: LabFactory) -> None:
    lab = lab_factory(NO_SHARE, capacity=64)
    for i in range(40):
        lab.send(LAN, udp(sport=10000 + i))
    lab.advance(130)
    r1 = lab.dp.sweep(lab.now, 16)
    assert r1.visited == 16 and not r1.wrapped
    total = r1.expired
    while True:
        r = lab.dp.sweep(lab.now, 16)
        assert r.visited <= 16
        total += r.expired
        if r.wrapped:
            break
    assert total == 40 and lab.dp.count() == 0


def test_full_table_early_drops_unassured(lab_factory: LabFactory) -> None:
    lab = lab_factory(NO_SHARE, capacity=16)
    for i in range(16):
        assert lab.send(LAN, udp(sport=20000 + i)).out_iface == WAN
    assert lab.dp.count() == 16
    evicted = 0
    for i in range(16):
        r = lab.send(LAN, udp(sport=30000 + i))
        if r.out_iface == WAN:
            evicted += 1
        else:
            assert r.reason == "ct_full"
    c = lab.dp.counters()
    assert evicted > 0 and c["early_drop"] == evicted
    assert lab.dp.count() == 16


def assured_tcp(lab: Lab, sport: int) -> None:
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=sport, dport=80, flags="S")))
    lab.send(WAN, bytes(IP(src=SERVER, dst=ROUTER_WAN) / TCP(sport=80, dport=sport, flags="SA",
                                                            ack=1)))
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=sport, dport=80, flags="A",
                                                          seq=1, ack=1)))


def test_full_table_never_evicts_assured(lab_factory: LabFactory) -> None:
    lab = lab_factory(NO_SHARE, capacity=16)
    for i in range(16):
        assured_tcp(lab, 40000 + i)
    assert all(e.assured for e in lab.entries()) and lab.dp.count() == 16
    for i in range(8):
        r = lab.send(LAN, udp(sport=50000 + i))
        assert r.out_iface == -1 and r.reason == "ct_full"
    c = lab.dp.counters()
    assert c["drop"] == 8 and c["early_drop"] == 0
    assert lab.dp.drops()["ct_full"] == 8
    assert sorted(e.sport[0] for e in lab.entries()) == [40000 + i for i in range(16)]
    # Existing flows keep working while the table is full.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=40003, dport=80,
                                                              flags="A", seq=1, ack=1)))
    assert r.out_iface == WAN


def test_flush(lab: Lab) -> None:
    for i in range(5):
        lab.send(LAN, udp(sport=9000 + i))
    lab.dp.flush(lab.now)
    assert lab.dp.count() == 0 and lab.entries() == []


def test_save_and_restore_keep_connections_and_mappings(lab_factory: LabFactory) -> None:
    from tests.native.conftest import LAN_HOST2

    lab = lab_factory()
    lab.send(LAN, udp(LAN_HOST2, 5000))  # takes external port 5000
    out = lab.send(LAN, udp(LAN_HOST, 5000))  # gets another one
    port = IP(out.data)[UDP].sport
    assured_tcp(lab, 40000)
    saved = lab.entries()
    assert len(saved) == 3

    fresh = lab_factory()  # a new router: same config, empty table
    fresh.now = lab.now + 5000
    for e in saved:
        assert fresh.dp.restore(e, fresh.now) == 0
    again = {(e.src, e.sport, e.state, e.assured) for e in fresh.entries()}
    assert again == {(e.src, e.sport, e.state, e.assured) for e in saved}
    # The NAT binding survived: replies reach the right host ...
    back = fresh.send(WAN, udp_reply(port))
    assert back.out_iface == LAN and IP(back.data).dst == LAN_HOST
    # ... and the mapping too: the host keeps its port toward a new destination.
    r = fresh.send(LAN, bytes(IP(src=LAN_HOST, dst="198.51.100.99") / UDP(sport=5000, dport=1)))
    assert IP(r.data)[UDP].sport == port
    # A duplicate is refused.
    assert fresh.dp.restore(saved[0], fresh.now) == -2
