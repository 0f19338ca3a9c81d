"""Every cell of the TCP transition table, and the table driven by packets."""

import pytest
from router.native._rt import lib

from router.datapath import TCP_STATE_NAMES
from tests.native.conftest import LAN, LAN_HOST, ROUTER_WAN, SERVER, WAN, Lab, LabFactory
from tests.packets import IP, TCP, verify_checksums

IV, IG = 0xFE, 0xFF
S = {n: i for i, n in enumerate(TCP_STATE_NAMES)}
NO, SS, SR, ES, FW, CW, LA, TW, CL, S2 = (S[n] for n in (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
    "TIME_WAIT", "CLOSE", "SYN_SENT2"))
CLASSES = ["syn", "synack", "fin", "ack", "rst", "none"]

# Linux nf_conntrack_proto_tcp.c tcp_conntracks[][][], written out independently.
#            NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
EXPECTED = {
    0: {
        "syn":    [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        "synack": [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        "fin":    [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        "ack":    [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        "rst":    [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        "none":   [IV] * 10,
    },
    1: {
        "syn":    [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        "synack": [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        "fin":    [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        "ack":    [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        "rst":    [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        "none":   [IV] * 10,
    },
}


@pytest.mark.parametrize("direction", [0, 1])
@pytest.mark.parametrize("cls", range(6))
@pytest.mark.parametrize("state", range(10))
def test_every_cell(direction: int, cls: int, state: int) -> None:
    want = EXPECTED[direction][CLASSES[cls]][state]
    assert lib.rt_tcp_transition(direction, cls, state) == want


@pytest.mark.parametrize(("flags", "cls"), [
    (0x02, 0), (0x12, 1), (0x11, 2), (0x01, 2), (0x10, 3), (0x04, 4), (0x14, 4),
    (0x16, 4), (0x00, 5), (0x08, 5), (0x18, 3),
])
def test_flag_class_priority(flags: int, cls: int) -> None:
    assert lib.rt_tcp_flag_class(flags) == cls


def test_out_of_range_is_invalid() -> None:
    assert lib.rt_tcp_transition(2, 0, 0) == IV
    assert lib.rt_tcp_transition(0, 6, 0) == IV
    assert lib.rt_tcp_transition(0, 0, 10) == IV


# -- driven by packets ------------------------------------------------------

CPORT, SPORT = 40000, 80


def out_seg(flags: str, seq: int = 1000, ack: int = 0) -> bytes:
    return bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=CPORT, dport=SPORT, flags=flags,
                                                   seq=seq, ack=ack))


def in_seg(flags: str, seq: int = 5000, ack: int = 0) -> bytes:
    return bytes(IP(src=SERVER, dst=ROUTER_WAN) / TCP(sport=SPORT, dport=CPORT, flags=flags,
                                                     seq=seq, ack=ack))


def the_entry(lab: Lab):  # type: ignore[no-untyped-def]
    (e,) = lab.entries()
    return e


def test_full_connection_life(lab: Lab) -> None:
    r = lab.send(LAN, out_seg("S"))
    assert r.out_iface == WAN and r.reason == "none"
    verify_checksums(r.data)
    e = the_entry(lab)
    assert e.state == "SYN_SENT" and not e.seen_reply and not e.assured
    assert 239_000 < e.timeout_ms <= 240_000  # BEHAVE transitory, not Linux's 120

    r = lab.send(WAN, in_seg("SA", ack=1001))
    assert r.out_iface == LAN
    verify_checksums(r.data)
    assert IP(r.data).dst == LAN_HOST
    e = the_entry(lab)
    assert e.state == "SYN_RECV" and e.seen_reply and not e.assured
    assert 239_000 < e.timeout_ms <= 240_000

    lab.send(LAN, out_seg("A", seq=1001, ack=5001))
    e = the_entry(lab)
    assert e.state == "ESTABLISHED" and e.assured
    assert e.timeout_ms > 400_000_000

    lab.send(LAN, out_seg("FA", seq=1001, ack=5001))
    assert the_entry(lab).state == "FIN_WAIT"
    lab.send(WAN, in_seg("FA", seq=5001, ack=1002))
    assert the_entry(lab).state == "LAST_ACK"
    lab.send(LAN, out_seg("A", seq=1002, ack=5002))
    e = the_entry(lab)
    assert e.state == "TIME_WAIT" and 239_000 < e.timeout_ms <= 240_000
    assert e.packets == (4, 2)


def test_invalid_transition_is_dropped(lab: Lab) -> None:
    lab.send(LAN, out_seg("S"))
    r = lab.send(LAN, out_seg("A"))  # ACK before any SYN/ACK: sSS -> sIV
    assert r.out_iface == -1 and r.reason == "ct_invalid"
    assert lab.dp.counters()["invalid"] == 1
    assert the_entry(lab).state == "SYN_SENT"


def test_ignored_packet_passes_without_change(lab: Lab) -> None:
    lab.send(LAN, out_seg("S"))
    lab.send(WAN, in_seg("SA", ack=1001))
    lab.send(LAN, out_seg("A", seq=1001, ack=5001))
    before = the_entry(lab)
    r = lab.send(WAN, in_seg("SA", ack=1001))  # late SYN/ACK: sIG
    assert r.out_iface == LAN
    assert lab.dp.counters()["ignore"] == 1
    after = the_entry(lab)
    assert after.state == "ESTABLISHED" and after.packets == before.packets


def test_rst_as_only_answer_removes_entry(lab: Lab) -> None:
    lab.send(LAN, out_seg("S"))
    r = lab.send(WAN, in_seg("RA", seq=0, ack=1001))
    assert r.out_iface == LAN  # the RST still reaches the client
    assert lab.entries() == []


def test_rst_on_established_closes(lab: Lab) -> None:
    lab.send(LAN, out_seg("S"))
    lab.send(WAN, in_seg("SA", ack=1001))
    lab.send(LAN, out_seg("A", seq=1001, ack=5001))
    lab.send(WAN, in_seg("R", seq=5001))
    e = the_entry(lab)
    assert e.state == "CLOSE" and 239_000 < e.timeout_ms <= 240_000  # RFC 7857 2.1


def test_syn_in_time_wait_reopens(lab: Lab) -> None:
    test_full_connection_life(lab)
    r = lab.send(LAN, out_seg("S", seq=9000))
    assert r.out_iface == WAN
    e = the_entry(lab)
    assert e.state == "SYN_SENT" and e.packets == (1, 0)
    assert lab.dp.counters()["deleted"] == 1


def test_invalid_flag_combinations_never_open(lab: Lab) -> None:
    for flags in ("SF", "", "F", "SR", "FPU"):
        r = lab.send(LAN, out_seg(flags))
        assert r.out_iface == -1, flags
        assert r.reason == "bad_tcp_flags", flags
    assert lab.entries() == []


def test_midstream_pickup_loose(lab: Lab) -> None:
    r = lab.send(LAN, out_seg("A", seq=1, ack=1))
    assert r.out_iface == WAN
    e = the_entry(lab)
    assert e.state == "ESTABLISHED" and not e.assured
    assert e.timeout_ms <= 300_000  # capped until the other side answers
    lab.send(WAN, in_seg("A", seq=1, ack=1))
    e = the_entry(lab)
    assert e.assured and e.timeout_ms > 300_000


def test_midstream_pickup_disabled(lab_factory: LabFactory) -> None:
    lab = lab_factory("\n[conntrack]\ntcp_loose = false\n")
    r = lab.send(LAN, out_seg("A", seq=1, ack=1))
    assert r.out_iface == -1 and r.reason == "bad_tcp_flags"


def test_simultaneous_open(lab: Lab) -> None:
    lab.send(LAN, out_seg("S"))
    lab.send(WAN, in_seg("S"))
    assert the_entry(lab).state == "SYN_SENT2"
    lab.send(LAN, out_seg("SA", ack=5001))
    assert the_entry(lab).state == "SYN_RECV"
