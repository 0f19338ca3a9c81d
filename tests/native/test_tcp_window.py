"""TCP window tracking, bound by bound: Linux's tcp_in_window() rules driven
by real segments through the data plane."""

from __future__ import annotations

import struct
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest
from router.native._rt import lib

from router.datapath import CtEntry
from tests.native.conftest import LAN, LAN_HOST, ROUTER_WAN, SERVER, WAN, Lab, make_lab
from tests.packets import IP, TCP, Raw, checksum

CPORT, SPORT = 40000, 80
C_ISN, S_ISN = 1_000_000, 7_000_000


def seg(out: bool, flags: str, seq: int, ack: int = 0, win: int = 8192,
        data: bytes = b"", options: list[Any] | None = None) -> bytes:
    if out:
        ip = IP(src=LAN_HOST, dst=SERVER)
        tcp = TCP(sport=CPORT, dport=SPORT, flags=flags, seq=seq % 2**32, ack=ack % 2**32,
                  window=win, options=options or [])
    else:
        ip = IP(src=SERVER, dst=ROUTER_WAN)
        tcp = TCP(sport=SPORT, dport=CPORT, flags=flags, seq=seq % 2**32, ack=ack % 2**32,
                  window=win, options=options or [])
    return bytes(ip / tcp / Raw(data)) if data else bytes(ip / tcp)


def entry(lab: Lab) -> CtEntry:
    (e,) = lab.entries()
    return e


def handshake(lab: Lab, c_opts: list[Any] | None = None, s_opts: list[Any] | None = None,
              c_win: int = 8192, s_win: int = 8192) -> None:
    """SYN, SYN/ACK, ACK; afterwards the client's next seq is C_ISN + 1 and
    the server's S_ISN + 1."""
    assert lab.send(LAN, seg(True, "S", C_ISN, win=c_win, options=c_opts)).out_iface == WAN
    assert lab.send(WAN, seg(False, "SA", S_ISN, C_ISN + 1, win=s_win,
                             options=s_opts)).out_iface == LAN
    assert lab.send(LAN, seg(True, "A", C_ISN + 1, S_ISN + 1, win=c_win)).out_iface == WAN
    assert entry(lab).state == "ESTABLISHED"


def dropped(lab: Lab, pkt: bytes, iface: int, reason: str = "tcp_out_of_window") -> None:
    invalid = lab.dp.counters()["invalid"]
    r = lab.send(iface, pkt)
    assert r.out_iface == -1 and r.reason == reason
    assert lab.dp.counters()["invalid"] == invalid + 1


def test_in_window_data_passes_both_ways(lab: Lab) -> None:
    handshake(lab)
    for i in range(5):
        assert lab.send(LAN, seg(True, "PA", C_ISN + 1 + i * 100, S_ISN + 1,
                                 data=b"x" * 100)).out_iface == WAN
    assert lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 501)).out_iface == LAN
    assert lab.dp.drops().get("tcp_out_of_window", 0) == 0


def test_bound_I_beyond_what_the_receiver_allowed(lab: Lab) -> None:
    # The server announced 8192 bytes of window: the client may not send
    # beyond C_ISN + 1 + 8192.
    handshake(lab)
    dropped(lab, seg(True, "PA", C_ISN + 1 + 8193, S_ISN + 1, data=b"x"), LAN)
    assert lab.send(LAN, seg(True, "PA", C_ISN + 1 + 8000, S_ISN + 1,
                             data=b"x")).out_iface == WAN
    assert entry(lab).state == "ESTABLISHED"


def test_bound_II_older_than_a_window(lab: Lab) -> None:
    handshake(lab)
    # Move the client forward by 8000 bytes, acknowledged in steps.
    for i in range(8):
        lab.send(LAN, seg(True, "PA", C_ISN + 1 + i * 1000, S_ISN + 1, data=b"x" * 1000))
        lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1 + (i + 1) * 1000))
    for i in range(8, 20):
        lab.send(LAN, seg(True, "PA", C_ISN + 1 + i * 1000, S_ISN + 1, data=b"x" * 1000))
        lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1 + (i + 1) * 1000))
    # A segment ending more than the receiver's largest window (8192) before
    # the highest end seen is too old to be a retransmission.
    dropped(lab, seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 100), LAN)
    # One ending inside it passes (a plain retransmission).
    assert lab.send(LAN, seg(True, "PA", C_ISN + 1 + 19_000, S_ISN + 1,
                             data=b"x" * 1000)).out_iface == WAN


def test_bound_III_ack_of_unsent_data(lab: Lab) -> None:
    handshake(lab)
    lab.send(LAN, seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 100))
    # The server acknowledges 101 bytes: one more than was sent.
    dropped(lab, seg(False, "A", S_ISN + 1, C_ISN + 102), WAN)
    assert lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 101)).out_iface == LAN


def test_bound_IV_ancient_ack(lab: Lab) -> None:
    handshake(lab)
    # 70000 bytes acknowledged in windowed steps; the largest window stays
    # below 66000, so MAXACKWINDOW is 66000.
    for i in range(70):
        lab.send(LAN, seg(True, "PA", C_ISN + 1 + i * 1000, S_ISN + 1, data=b"x" * 1000))
        lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1 + (i + 1) * 1000))
    dropped(lab, seg(False, "A", S_ISN + 1, C_ISN + 1 + 70_000 - 66_001), WAN)
    assert lab.send(WAN, seg(False, "A", S_ISN + 1,
                             C_ISN + 1 + 70_000 - 65_000)).out_iface == LAN


def test_window_scaling_applies_when_both_offer_it(lab: Lab) -> None:
    ws = [("WScale", 7)]
    handshake(lab, c_opts=ws, s_opts=ws, s_win=1000)
    # 1000 << 7 = 128000 bytes of window after the handshake's SYN/ACK
    # (SYN windows are never scaled), announced by the server's next ACK.
    assert lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1, win=1000)).out_iface == LAN
    assert lab.send(LAN, seg(True, "PA", C_ISN + 1 + 100_000, S_ISN + 1,
                             data=b"x")).out_iface == WAN
    e = entry(lab)
    assert e.tcp_window is not None
    assert e.tcp_window[0][3] == 7 and e.tcp_window[1][3] == 7  # scale per side
    assert e.tcp_window[0][4] & lib.RT_TCPF_WINDOW_SCALE


def test_window_scaling_ignored_when_only_one_side_offers_it(lab: Lab) -> None:
    handshake(lab, c_opts=[("WScale", 7)], s_opts=None, s_win=1000)
    lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1, win=1000))
    # Unscaled, the server allows only ~1000 bytes (plus the SYN's 8192 max).
    dropped(lab, seg(True, "PA", C_ISN + 1 + 100_000, S_ISN + 1, data=b"x"), LAN)
    e = entry(lab)
    assert e.tcp_window is not None
    assert e.tcp_window[0][3] == 0 and e.tcp_window[1][3] == 0


def test_sack_right_edge_is_the_acknowledgement_bound(lab: Lab) -> None:
    sack = [("SAckOK", b"")]
    handshake(lab, c_opts=sack, s_opts=sack)
    lab.send(LAN, seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 300))
    # Selective ACK of the last 100 bytes sent: fine.
    ok = [("NOP", None), ("NOP", None), ("SAck", (C_ISN + 201, C_ISN + 301))]
    assert lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 101, options=ok)).out_iface == LAN
    # A SACK block reaching past what was sent is out of window.
    bad = [("NOP", None), ("NOP", None), ("SAck", (C_ISN + 201, C_ISN + 401))]
    dropped(lab, seg(False, "A", S_ISN + 1, C_ISN + 101, options=bad), WAN)


def test_sack_ignored_without_sack_permitted(lab: Lab) -> None:
    handshake(lab)  # no SAckOK
    lab.send(LAN, seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 300))
    odd = [("NOP", None), ("NOP", None), ("SAck", (C_ISN + 201, C_ISN + 401))]
    assert lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 101, options=odd)).out_iface == LAN


def test_rst_in_window_closes(lab: Lab) -> None:
    handshake(lab)
    assert lab.send(WAN, seg(False, "R", S_ISN + 1)).out_iface == LAN
    assert entry(lab).state == "CLOSE"


def test_rst_out_of_window_is_invalid(lab: Lab) -> None:
    handshake(lab)
    dropped(lab, seg(False, "R", S_ISN + 1 + 1_000_000), WAN, "tcp_invalid_rst")
    dropped(lab, seg(False, "RA", S_ISN + 1 - 100_000, C_ISN + 1), WAN, "tcp_invalid_rst")
    assert entry(lab).state == "ESTABLISHED"


def established_with_data(lab: Lab) -> None:
    """Handshake, then the client sends 1000 bytes the server acknowledges:
    the server's next sequence number is S_ISN + 1, the client's C_ISN + 1001."""
    handshake(lab)
    assert lab.send(LAN, seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 1000)).out_iface == WAN
    assert lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1001)).out_iface == LAN
    e = entry(lab)
    assert e.state == "ESTABLISHED" and e.assured and e.timeout_ms > 86400_000


def test_rst_in_window_but_not_exact_keeps_the_connection(lab: Lab) -> None:
    """RFC 5961 3.2, as Linux: an in-window RST that is not at the exact next
    sequence number passes (the receiver answers it with a challenge ACK)
    but neither closes the connection nor shortens its 5-day timeout."""
    established_with_data(lab)
    for off in (1, 500, 8000):
        assert lab.send(WAN, seg(False, "R", S_ISN + 1 + off)).out_iface == LAN
        e = entry(lab)
        assert e.state == "ESTABLISHED" and e.timeout_ms > 86400_000
    # Before what the client acknowledged: invalid.
    dropped(lab, seg(False, "R", S_ISN), WAN, "tcp_invalid_rst")
    # From the client, at the exact place: after the data it sent last.
    assert lab.send(LAN, seg(True, "R", C_ISN + 1001)).out_iface == WAN
    assert entry(lab).state == "CLOSE"


def test_exact_rst_from_the_server_closes(lab: Lab) -> None:
    established_with_data(lab)
    assert lab.send(WAN, seg(False, "RA", S_ISN + 1, C_ISN + 1001)).out_iface == LAN
    assert entry(lab).state == "CLOSE"


def fragment(pkt: bytes, first: bool, offset8: int = 0, more: bool = True) -> bytes:
    """'pkt' (IPv4, no options) as a fragment: the first (offset 0, MF set)
    or a later one at 'offset8' 8-byte units, with a fresh header checksum."""
    b = bytearray(pkt)
    frag = (0x2000 if more else 0) | (0 if first else offset8)
    b[4:6] = b"\x12\x34"
    b[6:8] = struct.pack("!H", frag)
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", checksum(bytes(b[:20])))
    return bytes(b)


def test_rst_in_a_first_fragment_is_checked_like_any_segment(lab: Lab) -> None:
    """A RST with more-fragments set used to skip the window check: one
    spoofed packet with any sequence number closed an established flow."""
    established_with_data(lab)
    blind = fragment(seg(False, "R", S_ISN + 1 + 1_000_000) + b"", first=True)
    r = lab.send(WAN, blind)
    assert r.out_iface == -1 and r.reason == "tcp_invalid_rst"
    r = lab.send(WAN, fragment(seg(False, "R", S_ISN + 1 + 700), first=True))
    assert r.out_iface == LAN  # in window, not exact: passes, changes nothing
    e = entry(lab)
    assert e.state == "ESTABLISHED" and e.timeout_ms > 86400_000
    # The data in a first fragment moves the window like a whole segment's.
    r = lab.send(LAN, fragment(seg(True, "PA", C_ISN + 1001, S_ISN + 1, data=b"y" * 64),
                               first=True))
    assert r.out_iface == WAN
    dropped(lab, fragment(seg(True, "PA", C_ISN + 1001 + 9000, S_ISN + 1, data=b"y" * 64),
                          first=True), LAN)


def test_a_later_fragment_never_changes_tcp_state(lab: Lab) -> None:
    """A later fragment carries no TCP header: bytes in it that look like a
    RST are data, and whatever happens to it, the connection stays."""
    established_with_data(lab)
    rst = seg(False, "R", S_ISN + 1)
    later = fragment(rst[:20] + rst[20:] + bytes(16), first=False, offset8=3, more=False)
    lab.send(WAN, later)
    e = entry(lab)
    assert e.state == "ESTABLISHED" and e.timeout_ms > 86400_000


def test_rst_answering_syn_with_seq_zero(lab: Lab) -> None:
    lab.send(LAN, seg(True, "S", C_ISN))
    r = lab.send(WAN, seg(False, "RA", 0, C_ISN + 1))
    assert r.out_iface == LAN
    assert lab.entries() == []


def test_liberal_mode_lets_out_of_window_pass() -> None:
    lab = make_lab("\n[conntrack]\ntcp_liberal = true\n")
    handshake(lab)
    r = lab.send(LAN, seg(True, "PA", C_ISN + 1 + 1_000_000, S_ISN + 1, data=b"x"))
    assert r.out_iface == WAN


def test_midstream_pickup_is_liberal_in_both_directions(lab: Lab) -> None:
    assert lab.send(LAN, seg(True, "A", 5, 9)).out_iface == WAN
    e = entry(lab)
    assert e.tcp_window is not None
    assert all(w[4] & lib.RT_TCPF_BE_LIBERAL for w in e.tcp_window)
    # The windows are unknown (scaling above all): far-away data passes.
    assert lab.send(WAN, seg(False, "PA", 9 + 500_000, 5, data=b"y")).out_iface == LAN
    assert entry(lab).assured


def test_midstream_pickup_off_refuses_the_first_ack() -> None:
    lab = make_lab("\n[conntrack]\ntcp_loose = false\n")
    r = lab.send(LAN, seg(True, "A", 5, 9))
    assert r.out_iface == -1 and lab.entries() == []


TIMEOUTS = """
[conntrack.timeouts]
tcp_unacknowledged = 200
tcp_max_retrans = 100
"""


def test_unacknowledged_data_shortens_the_timeout() -> None:
    lab = make_lab(TIMEOUTS)
    handshake(lab)
    assert entry(lab).timeout_ms > 400_000_000
    lab.send(LAN, seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 10))
    assert 199_000 < entry(lab).timeout_ms <= 200_000
    e = entry(lab)
    assert e.tcp_window is not None and e.tcp_window[0][4] & lib.RT_TCPF_DATA_UNACK
    lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 11))
    assert entry(lab).timeout_ms > 400_000_000


def test_repeated_retransmissions_use_the_retrans_timeout() -> None:
    lab = make_lab(TIMEOUTS + "\n[conntrack]\ntcp_max_retrans = 3\n")
    handshake(lab)
    data = seg(True, "PA", C_ISN + 1, S_ISN + 1, data=b"x" * 10)
    for _ in range(3):  # the segment and two retransmissions
        lab.send(LAN, data)
    assert 199_000 < entry(lab).timeout_ms <= 200_000  # unacknowledged
    lab.send(LAN, data)  # the third retransmission
    assert 99_000 < entry(lab).timeout_ms <= 100_000
    # Progress resets the count.
    lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 11))
    assert entry(lab).timeout_ms > 400_000_000


def test_zero_window_uses_the_retrans_timeout() -> None:
    lab = make_lab(TIMEOUTS)
    handshake(lab)
    lab.send(WAN, seg(False, "A", S_ISN + 1, C_ISN + 1, win=0))
    assert 99_000 < entry(lab).timeout_ms <= 100_000


def test_syn_with_higher_sequence_restarts_the_window(lab: Lab) -> None:
    lab.send(LAN, seg(True, "S", C_ISN))
    # The client restarted with a new ISN far ahead before any answer.
    assert lab.send(LAN, seg(True, "S", C_ISN + 5_000_000)).out_iface == WAN
    r = lab.send(WAN, seg(False, "SA", S_ISN, C_ISN + 5_000_001))
    assert r.out_iface == LAN
    assert lab.send(LAN, seg(True, "A", C_ISN + 5_000_001, S_ISN + 1)).out_iface == WAN
    assert entry(lab).state == "ESTABLISHED"


def raw_syn(opts: bytes) -> bytes:
    """A SYN from the LAN host whose option bytes are exactly ``opts``
    (padded to a multiple of 4), checksums computed here."""
    opts = opts + b"\x00" * (-len(opts) % 4)
    doff = (20 + len(opts)) // 4
    tcp = struct.pack("!HHIIBBHHH", CPORT, SPORT, C_ISN, 0, doff << 4, 0x02, 8192, 0, 0) + opts
    src, dst = IPv4Address(LAN_HOST).packed, IPv4Address(SERVER).packed
    csum = checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + tcp


@pytest.mark.parametrize("opts", [
    b"\x03",                     # window scale cut short
    b"\x05\x00",                 # length 0
    b"\x05\x01",                 # length 1
    b"\x03\x03\xff",             # scale 255: capped at 14
    b"\x05\x0a" + b"\xff" * 6,   # SACK running past the header
    b"\x01" * 40,                # only NOPs, the most there can be
    b"\x03\x03\x07\x04\x02",     # well-formed: scale 7, SACK permitted
])
def test_hostile_options_are_harmless(lab: Lab, opts: bytes) -> None:
    r = lab.send(LAN, raw_syn(opts))
    assert r.out_iface == WAN
    e = entry(lab)
    assert e.tcp_window is not None and e.tcp_window[0][3] <= 14


def test_window_state_survives_dump_and_restore(lab: Lab) -> None:
    handshake(lab, c_opts=[("WScale", 7)], s_opts=[("WScale", 7)], s_win=1000)
    e = entry(lab)
    lab.dp.flush(lab.now)
    assert lab.dp.restore(e, lab.now) == 0
    assert entry(lab).tcp_window == e.tcp_window
    # Still strict: far beyond the window is refused.
    dropped(lab, seg(True, "PA", C_ISN + 1 + 10_000_000, S_ISN + 1, data=b"x"), LAN)


def test_restore_without_windows_is_liberal(lab: Lab) -> None:
    handshake(lab)
    e = entry(lab)
    lab.dp.flush(lab.now)
    assert lab.dp.restore(replace(e, tcp_window=None), lab.now) == 0
    w = entry(lab).tcp_window
    assert w is not None and all(d[4] & lib.RT_TCPF_BE_LIBERAL for d in w)
    assert lab.send(LAN, seg(True, "PA", C_ISN + 1 + 10_000_000, S_ISN + 1,
                             data=b"x")).out_iface == WAN
