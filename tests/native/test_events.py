"""Connection events, drop samples and packet capture from the C core."""

from __future__ import annotations

from tests.native.conftest import LAN, LAN_HOST, ROUTER_WAN, SERVER, WAN, Lab, make_lab
from tests.packets import IP, TCP, UDP, Raw


def out_seg(flags: str, seq: int, ack: int = 0) -> bytes:
    return bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=40000, dport=80, flags=flags,
                                                   seq=seq, ack=ack))


def in_seg(flags: str, seq: int, ack: int = 0) -> bytes:
    return bytes(IP(src=SERVER, dst=ROUTER_WAN) / TCP(sport=80, dport=40000, flags=flags,
                                                     seq=seq, ack=ack))


def test_nothing_is_queued_while_off(lab: Lab) -> None:
    lab.send(LAN, out_seg("S", 100))
    assert lab.dp.read_events() == []


def test_connection_life_gives_new_updates_destroy(lab: Lab) -> None:
    lab.dp.enable_events(ct=True)
    lab.send(LAN, out_seg("S", 100))
    lab.send(WAN, in_seg("SA", 500, 101))
    lab.send(LAN, out_seg("A", 101, 501))
    lab.send(LAN, out_seg("A", 101, 501))  # nothing changes: no event
    lab.send(WAN, in_seg("R", 501))
    lab.dp.flush(lab.now)
    evs = lab.dp.read_events()
    assert [(e.type, e.entry.state) for e in evs] == [
        ("NEW", "SYN_SENT"), ("UPDATE", "SYN_RECV"), ("UPDATE", "ESTABLISHED"),
        ("UPDATE", "CLOSE"), ("DESTROY", "CLOSE")]
    assert evs[0].entry.src == (LAN_HOST, SERVER) and evs[0].entry.dst == (SERVER, ROUTER_WAN)
    assert evs[2].entry.assured and evs[-1].entry.packets == (3, 2)
    assert lab.dp.read_events() == []


def test_expiry_and_eviction_are_destroyed_too() -> None:
    lab = make_lab(capacity=16)
    lab.dp.enable_events(ct=True)
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=53) / Raw(b"q")))
    lab.advance(500)
    lab.dp.sweep(lab.now, 1 << 20)
    assert [e.type for e in lab.dp.read_events()] == ["NEW", "DESTROY"]


def test_a_full_ring_counts_what_it_loses(lab: Lab) -> None:
    lab.dp.enable_events(ct=True, ring=4)
    for port in range(10):
        lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1000 + port, dport=53)))
    assert len(lab.dp.read_events()) == 4
    assert lab.dp.events_lost()["NEW"] == 6
    # The data plane went on regardless.
    assert lab.dp.count() == 10


def test_drop_samples_name_reason_rule_and_packet() -> None:
    lab = make_lab('''
[[firewall.rule]]
from = "lan"
protocol = "tcp"
port = 25
action = "drop"
''')
    lab.dp.enable_events(ct=False, drop_reasons=["firewall_drop", "policy"], drop_rate=2)
    pkt = bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=4444, dport=25, flags="S"))
    for _ in range(5):
        assert lab.send(LAN, pkt).reason == "firewall_drop"
    # Unsolicited from the WAN: the zone policy.
    lab.send(WAN, bytes(IP(src=SERVER, dst=LAN_HOST) / TCP(sport=1, dport=22, flags="S")))
    evs = lab.dp.read_events()
    assert len(evs) == 2  # two a second at most: the rest are counted
    e = evs[0]
    assert (e.type, e.reason, e.rule, e.iface) == ("DROP", "firewall_drop", 0, LAN)
    assert (e.entry.src[0], e.entry.dst[0], e.entry.sport[0], e.entry.dport[0]) == (
        LAN_HOST, SERVER, 4444, 25)
    assert e.tcp_flags == 0x02
    assert lab.dp.events_lost()["RATE_LIMITED"] == 4
    lab.advance(1)
    lab.send(WAN, bytes(IP(src=SERVER, dst=LAN_HOST) / TCP(sport=1, dport=22, flags="S")))
    (e,) = lab.dp.read_events()
    assert (e.reason, e.rule, e.iface) == ("policy", -1, WAN)


def test_drop_sample_of_a_truncated_packet_is_safe(lab: Lab) -> None:
    lab.dp.enable_events(ct=False, drop_reasons=["short_packet", "bad_ip_version",
                                                 "bad_header_length"], drop_rate=100)
    for junk in (b"", b"\x45", b"\x60" + b"\0" * 10, b"\x4f" + b"\0" * 19):
        lab.send(LAN, junk)
    evs = lab.dp.read_events()
    assert len(evs) == 4 and all(e.type == "DROP" for e in evs)


def test_capture_refuses_bad_sizes(lab: Lab) -> None:
    import pytest

    from router.datapath import DatapathError
    for snap, slots in ((10, 8), (2048, 3), (2048, 0), (70000, 8)):
        with pytest.raises(DatapathError):
            lab.dp.capture_start([WAN], snaplen=snap, slots=slots)
    lab.dp.capture_start([WAN], snaplen=64, slots=8)
    # The pure pipeline (rt_dp_process) has no taps: they sit in the I/O
    # path, where packets are read and written (tested end to end).
    lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=5, dport=53)))
    assert lab.dp.capture_read() == []
    lab.dp.capture_stop()
    assert lab.dp.capture_lost() == 0


def test_destroy_carries_the_age_at_its_own_time(lab: Lab) -> None:
    """A connection ended by the control plane (expiry in a sweep, delete,
    flush) long after its last packet: its DESTROY says how long it lived
    until then, not until that packet (the flow log's start and end)."""
    lab.dp.enable_events(ct=True)
    for sport in (1, 2):
        lab.send(LAN, bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=sport, dport=53)))
    lab.dp.read_events()
    lab.advance(10)
    (first, _second) = lab.entries()
    assert lab.dp.delete(first.slot, lab.now)
    lab.advance(5)
    lab.dp.flush(lab.now)
    ages = [(e.type, round(e.entry.age_ms / 1000)) for e in lab.dp.read_events()]  # 64 ms steps
    assert ages == [("DESTROY", 10), ("DESTROY", 15)]


def test_only_the_types_asked_for_are_written(lab: Lab) -> None:
    """A reader of NEW and DESTROY alone (the flow log) costs no UPDATE."""
    lab.dp.enable_events(ct={"NEW", "DESTROY"})
    lab.send(LAN, out_seg("S", 100))
    lab.send(WAN, in_seg("SA", 500, 101))
    lab.send(LAN, out_seg("A", 101, 501))
    lab.send(WAN, in_seg("R", 501))
    lab.dp.flush(lab.now)
    assert [e.type for e in lab.dp.read_events()] == ["NEW", "DESTROY"]
    assert lab.dp.events_lost()["UPDATE"] == 0   # not written, so not lost either
