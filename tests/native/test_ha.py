"""The data plane's part in a high-availability pair: a standby opens no
forwarded connection, the load balancers' shared hash key, a backend's
orphaned segment, and the commit of synced connections (rt_ct_restore)."""

from __future__ import annotations

from router.ha.entries import from_entry, to_entry
from tests.native.conftest import LAN, LAN_HOST, NO_SHARE, ROUTER_WAN, SERVER, WAN, LabFactory
from tests.native.test_lb import CLIENT, LB, syn
from tests.packets import IP, TCP, UDP


def udp(sport: int) -> bytes:
    return bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=sport, dport=53) / b"q")


def test_a_standby_forwards_what_it_holds_and_opens_nothing(lab_factory: LabFactory) -> None:
    lab = lab_factory()
    assert lab.send(LAN, udp(5000)).out_iface == WAN
    lab.dp.set_standby(True)
    r = lab.send(LAN, udp(5001))
    assert r.out_iface == -1 and r.reason == "ha_standby"
    assert lab.send(LAN, udp(5000)).out_iface == WAN  # held: goes on
    assert len(lab.entries()) == 1
    lab.dp.set_standby(False)
    assert lab.send(LAN, udp(5001)).out_iface == WAN
    assert lab.dp.drops()["ha_standby"] == 1


def test_a_pair_given_one_key_picks_one_backend(lab_factory: LabFactory) -> None:
    one, two = lab_factory(LB.format(masq="") + NO_SHARE, seed=1), \
        lab_factory(LB.format(masq="") + NO_SHARE, seed=2)

    def picks() -> list[str]:
        return [IP(one.send(WAN, syn(s)).data).dst + "/" + IP(two.send(WAN, syn(s)).data).dst
                for s in range(40000, 40200)]
    apart = picks()
    assert any(a != b for a, b in (x.split("/") for x in apart))  # random keys differ
    one.dp.set_lb_key(12345)
    two.dp.set_lb_key(12345)
    one.dp.flush(one.now)
    two.dp.flush(two.now)
    assert all(a == b for a, b in (x.split("/") for x in picks()))


def test_a_backends_orphaned_segment_waits_for_the_client(lab_factory: LabFactory) -> None:
    lab = lab_factory(LB.format(masq=""))
    # The backend answers a connection this router never saw (its peer's):
    # not picked up as an outbound connection of its own.
    r = lab.send(LAN, bytes(IP(src="192.168.1.10", dst=CLIENT) /
                            TCP(sport=8080, dport=33000, flags="A", seq=5, ack=7)))
    assert r.out_iface == -1 and r.reason == "lb_orphan_reply"
    assert not lab.entries()
    # The client's next segment reopens it (mid-stream pickup) on a backend.
    r = lab.send(WAN, bytes(IP(src=CLIENT, dst=ROUTER_WAN) /
                            TCP(sport=33000, dport=80, flags="A", seq=7, ack=5)))
    assert r.out_iface == LAN and IP(r.data).dst.startswith("192.168.1.1")
    # A backend's own new connection (a SYN) is no orphan.
    r = lab.send(LAN, bytes(IP(src="192.168.1.10", dst=SERVER) /
                            TCP(sport=8080, dport=443, flags="S")))
    assert r.out_iface == WAN


def test_a_synced_connection_commits_with_its_binding(lab_factory: LabFactory) -> None:
    active, standby = lab_factory(seed=1), lab_factory(seed=2)
    r = active.send(LAN, udp(6000))
    ext = IP(r.data)[UDP].sport
    (e,) = active.entries()
    ct = from_entry(e)
    assert ct is not None
    back = to_entry(ct)
    assert back is not None
    standby.dp.set_standby(True)
    assert standby.dp.restore(back, standby.now) == 0
    standby.dp.set_standby(False)
    # The same external port on the new active, both ways.
    r = standby.send(LAN, udp(6000))
    assert IP(r.data)[UDP].sport == ext and IP(r.data).src == ROUTER_WAN
    r = standby.send(WAN, bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=53, dport=ext) / b"a"))
    assert r.out_iface == LAN and IP(r.data)[UDP].dport == 6000
    assert standby.dp.nat_mappings() == 1  # the mapping came with it
