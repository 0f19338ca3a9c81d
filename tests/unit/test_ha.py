"""High availability without sockets: conntrackd's wire format (against
bytes a real conntrackd 1.4.7 sent), the FTFW and NOTRACK channels over a
lossy pipe, the caches, the conversion of the router's connections, and
the [ha] section's checks."""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest

from router.config import ConfigError, parse
from router.ha import wire
from router.ha.caches import External, Internal
from router.ha.channel import Channel
from router.ha.entries import NAT_MAPPED, from_entry, to_entry
from router.ha.wire import SyncCt
from router.native.records import CtEntry

# The first 48 bytes of a NEW that conntrackd 1.4.7 (FTFW, first message:
# HELLO) sent for "conntrack -I -s 192.168.1.10 -d 203.0.113.80 -p tcp
# --sport 40000 --dport 80 --state ESTABLISHED -t 300 -u SEEN_REPLY,ASSURED".
CONNTRACKD_NEW = bytes.fromhex("102000546b0df548000c0000c0a8010acb007150000800050000000e"
                               "0005000206000000000800039c40005000050004")
TCP = SyncCt(4, 6, "192.168.1.10", "203.0.113.80", 40000, 80, 0x0E, 300, state=3)


def test_a_new_is_laid_out_as_conntrackd_lays_it_out() -> None:
    raw = wire.ct_msg(wire.T_CT_NEW, wire.F_HELLO, 0x6B0DF548, TCP)
    # The same header but for the length (conntrackd adds attributes this
    # router has no use for, which it skips), the same attributes in the
    # same order as far as the capture goes.
    assert raw[:2] + raw[4:len(CONNTRACKD_NEW)] == CONNTRACKD_NEW[:2] + CONNTRACKD_NEW[4:]
    msgs, errors = wire.split(raw)
    assert not errors and msgs[0].ct == TCP and msgs[0].flags == wire.F_HELLO


@pytest.mark.parametrize("ct", [
    SyncCt(4, 17, "192.168.1.10", "198.51.100.1", 5000, 9000, 0x9A, 120,
           snat="198.51.100.10", spat=61000),
    SyncCt(4, 6, "198.51.100.1", "198.51.100.10", 41000, 8080, 0x13E, 432000, state=3,
           dnat="192.168.1.10", dpat=80),
    SyncCt(4, 1, "192.168.1.10", "198.51.100.1", 7, 8 << 8, 0x8A, 30, snat="198.51.100.10",
           spat=3),
    SyncCt(6, 17, "2001:db8:1::10", "2001:db8:100::1", 5353, 53, 0x0A, 30),
])
def test_messages_round_trip(ct: SyncCt) -> None:
    data = wire.ct_msg(wire.T_CT_UPD, 0, 7, ct) + wire.ctl(wire.F_ACK, 8, 1, 6) + \
        wire.ctl(wire.F_ALIVE, 9)
    msgs, errors = wire.split(data)
    assert not errors
    assert [m.seq for m in msgs] == [7, 8, 9]
    assert msgs[0].ct == ct and msgs[0].type == wire.T_CT_UPD
    assert (msgs[1].first, msgs[1].last) == (1, 6) and msgs[1].is_ctl(wire.F_ACK)
    assert msgs[2].is_ctl(wire.F_ALIVE) and len(data) % 4 == 0


def test_unknown_attributes_are_skipped() -> None:
    raw = bytearray(wire.ct_msg(wire.T_CT_NEW, 0, 1, TCP))
    extra = struct.pack("!HH", 8, 27) + b"ftp\0"  # NTA_HELPER_NAME
    raw += extra
    struct.pack_into("!H", raw, 2, len(raw))
    msgs, errors = wire.split(bytes(raw))
    assert not errors and msgs[0].ct == TCP


@pytest.mark.parametrize("mangle, reason", [
    (lambda b: b[:5], "truncated"),
    (lambda b: bytes([0x20 | b[0] & 0x0F]) + b[1:], "bad_version"),
    (lambda b: b[:2] + struct.pack("!H", 4) + b[4:], "bad_size"),
    (lambda b: b[:2] + struct.pack("!H", len(b) + 4) + b[4:], "truncated"),
    (lambda b: bytes([0x10 | 7]) + b[1:], "bad_type"),
    (lambda b: b[:8] + struct.pack("!HH", 0, 0) + b[12:], "bad_payload"),      # length 0
    (lambda b: b[:8] + struct.pack("!HH", 13, 0) + b[12:], "bad_payload"),     # IPv4 group size
    (lambda b: b[:8] + struct.pack("!HH", 2000, 0) + b[12:], "bad_payload"),   # past the end
    (lambda b: b[:8] + struct.pack("!HH", 12, 40) + b[12:], "bad_payload"),    # no address
])
def test_malformed_messages_are_counted_by_reason(mangle: object, reason: str) -> None:
    raw = wire.ct_msg(wire.T_CT_NEW, 0, 1, TCP)
    msgs, errors = wire.split(mangle(raw))  # type: ignore[operator]
    assert errors == [reason] and not msgs


def test_a_bad_message_with_a_good_length_leaves_the_next_one() -> None:
    bad = bytearray(wire.ct_msg(wire.T_CT_NEW, 0, 1, TCP))
    bad[0] = 0x20  # version 2
    msgs, errors = wire.split(bytes(bad) + wire.ctl(wire.F_ALIVE, 2))
    assert errors == ["bad_version"] and [m.seq for m in msgs] == [2]


# ---- the channel -------------------------------------------------------------

class Pipe:
    """Two channels and a lossy wire between them, on a fake clock."""

    def __init__(self, ftfw: bool, loss: float, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.t = 0.0
        self.a = Channel(ftfw, 50, 10000, 1500, first_seq=0xFFFFFF00)  # wraps on the way
        self.b = Channel(ftfw, 50, 10000, 1500, first_seq=5000)
        self.inside = Internal()
        self.a.on_acked = self.inside.delivered
        self.cache = External(100000)

    def _carry(self, src: Channel, dst: Channel, lookup: object, loss: float,
               cache: External | None) -> None:
        for d in src.build(lookup, 1 << 30, self.t):  # type: ignore[arg-type]
            if self.rng.random() < loss:
                continue
            msgs, errors = wire.split(d)
            assert not errors
            for m in msgs:
                if dst.receive(m, self.t) == "data" and cache is not None and m.ct:
                    cache.apply(m.type, m.ct)

    def step(self, loss: float | None = None) -> None:
        self.t += 0.1
        self.a.tick(self.t)
        self.b.tick(self.t)
        self._carry(self.a, self.b, self.inside.lookup, self.loss if loss is None else loss,
                    self.cache)
        self._carry(self.b, self.a, lambda k: None, 0.0, None)

    def flow(self, n: int) -> SyncCt:
        return SyncCt(4, 17, "192.168.1.10", "198.51.100.1", 10000 + n, 53, 0x0A, 30)


def test_ftfw_loses_nothing_on_a_lossy_link_and_counts_the_resends() -> None:
    p = Pipe(ftfw=True, loss=0.3)
    for n in range(500):
        p.a.queue(p.inside.update(p.flow(n)), p.t)
        if n % 25 == 0:
            p.step()
    for n in range(0, 500, 7):  # some end while the link loses
        p.a.queue(p.inside.destroy(p.flow(n)), p.t)
    for _ in range(10):
        p.step()
    for _ in range(100):
        p.step(loss=0.0)
    assert set(p.cache.entries) == set(p.inside.live)
    assert p.b.stats.lost > 0 and p.a.stats.resent > 0 and p.b.stats.nacks_sent > 0
    assert not p.a.rs_of and not p.inside.dead  # every end heard, then forgotten


def test_notrack_sends_once_and_keeps_nothing() -> None:
    p = Pipe(ftfw=False, loss=0.0)
    for n in range(100):
        p.a.queue(p.inside.update(p.flow(n)), p.t)
    p.step()
    assert len(p.cache) == 100 and p.a.unacked == 0 and p.a.stats.sent == 100


def test_a_later_state_replaces_one_waiting_for_its_ack() -> None:
    p = Pipe(ftfw=True, loss=1.0)
    ct = p.flow(1)
    p.a.queue(p.inside.update(ct), p.t)
    p.step()
    assert p.a.unacked == 1
    p.a.queue(p.inside.update(dataclasses.replace(ct, status=0x0E)), p.t)
    assert p.a.unacked == 0 and p.a.pending == 1
    for _ in range(20):
        p.step(loss=0.0)
    assert p.cache.entries[ct.key].status == 0x0E


def test_a_restarted_peer_gets_what_waited_for_its_ack() -> None:
    p = Pipe(ftfw=True, loss=0.0)
    for _ in range(12):
        p.step()
    assert p.a.hello == "done" and p.b.hello == "done"
    for n in range(10):
        p.a.queue(p.inside.update(p.flow(n)), p.t)
    p.step(loss=1.0)  # all lost, then the peer restarts: a new sequence, HELLO
    assert p.a.unacked == 10
    p.b = Channel(True, 50, 10000, 1500, first_seq=777)
    p.cache = External(1000)
    for _ in range(20):
        p.step(loss=0.0)
    assert len(p.cache) == 10 and not p.a.rs_of  # every connection acknowledged


def test_old_sequence_numbers_are_dropped() -> None:
    ch = Channel(True, 50, 100, 1500)
    msg = wire.split(wire.ct_msg(wire.T_CT_NEW, 0, 100, TCP))[0][0]
    assert ch.receive(msg, 0.0) == "data"
    assert ch.receive(msg, 0.1) is None and ch.stats.duplicates == 1


def test_a_full_resend_queue_gives_up_the_oldest() -> None:
    inside = Internal()
    ch = Channel(True, 50, 8, 1500)
    ch.on_acked = inside.delivered
    for n in range(20):
        ch.queue(inside.update(SyncCt(4, 17, "10.0.0.1", "10.0.0.2", n + 1, 53, 8, 30)), 0.0)
    ch.build(inside.lookup, 1 << 20, 0.0)
    assert ch.unacked == 8 and ch.stats.resend_overflow == 12


def test_the_byte_budget_holds_the_rest_back() -> None:
    inside = Internal()
    ch = Channel(False, 50, 100, 1500)
    for n in range(100):
        ch.queue(inside.update(SyncCt(4, 17, "10.0.0.1", "10.0.0.2", n + 1, 53, 8, 30)), 0.0)
    sent = sum(len(d) for d in ch.build(inside.lookup, 600, 0.0))
    assert 600 <= sent < 700 and ch.pending > 80
    assert all(len(d) <= 1472 for d in ch.build(inside.lookup, 1 << 20, 0.0))


# ---- the router's connections -------------------------------------------------

def entry(**kw: object) -> CtEntry:
    base: dict[str, object] = dict(
        slot=3, family=4, proto=17, state=None, status=0x02 | 0x10 | NAT_MAPPED,
        src=("192.168.1.10", "198.51.100.1"), dst=("198.51.100.1", "198.51.100.10"),
        sport=(5000, 9000), dport=(9000, 61000), timeout_ms=29500, age_ms=4000,
        packets=(3, 3), bytes=(90, 90))
    return CtEntry(**(base | kw))  # type: ignore[arg-type]


def test_a_source_nat_connection_travels_with_its_binding() -> None:
    ct = from_entry(entry())
    assert ct is not None
    assert (ct.snat, ct.spat, ct.dnat, ct.dpat) == ("198.51.100.10", 61000, None, None)
    assert ct.status & wire.IPS_SRC_NAT and ct.status & wire.IPS_SRC_NAT_DONE
    assert not ct.status & NAT_MAPPED and ct.timeout == 30
    back = to_entry(ct)
    assert back is not None
    assert (back.src, back.dst, back.sport, back.dport) == \
        (entry().src, entry().dst, entry().sport, entry().dport)
    assert back.status & NAT_MAPPED and back.status & 0x10  # rebuilds its mapping


def test_a_port_forward_and_an_icmp_query_round_trip() -> None:
    fwd = entry(proto=6, state="ESTABLISHED", status=0x06 | 0x20,
                src=("198.51.100.1", "192.168.1.10"), dst=("198.51.100.10", "198.51.100.1"),
                sport=(41000, 80), dport=(8080, 41000))
    ping = entry(proto=1, src=("192.168.1.10", "198.51.100.1"),
                 dst=("198.51.100.1", "198.51.100.10"), sport=(7, 9), dport=(8 << 8, 0))
    for e in (fwd, ping):
        ct = from_entry(e)
        assert ct is not None
        back = to_entry(wire.split(wire.ct_msg(wire.T_CT_NEW, 0, 1, ct))[0][0].ct)  # type: ignore[arg-type]
        assert back is not None
        assert (back.src, back.dst, back.sport, back.dport, back.state) == \
            (e.src, e.dst, e.sport, e.dport, e.state)
    assert not to_entry(from_entry(fwd)).status & NAT_MAPPED  # type: ignore[arg-type,union-attr]


def test_what_stays_home() -> None:
    assert from_entry(entry(status=0x4000)) is None  # to the router's own services
    assert from_entry(entry(status=0x8000)) is None  # from them
    assert from_entry(entry(family=6, src=("2001:db8:1::10", "2001:db8:100::1"),
                            dst=("2001:db8:100::1", "2001:db8:100::2"))) is None  # NAT66
    assert to_entry(SyncCt(4, 6, "10.0.0.1", "10.0.0.2", 1, 2, 0, 10, state=42)) is None


def test_the_external_cache_has_a_limit() -> None:
    ext = External(2)
    for n in range(3):
        ext.apply(wire.T_CT_NEW, SyncCt(4, 17, "10.0.0.1", "10.0.0.2", n + 1, 53, 8, 30))
    assert len(ext) == 2 and ext.full == 1
    ext.apply(wire.T_CT_DEL, SyncCt(4, 17, "10.0.0.1", "10.0.0.2", 1, 53, 8, 30))
    assert len(ext) == 1


# ---- the [ha] section ------------------------------------------------------------

BASE = """
[[interface]]
name = "lan0"
attach = "eth1"
address = "192.168.1.2/24"
zone = "lan"
kernel_multicast = true

[[interface]]
name = "wan0"
attach = "eth0"
address = "198.51.100.2/24"
zone = "wan"
"""
GOOD = BASE + """
[ha]
mode = "ftfw"
local = "10.99.0.1"
peer = "10.99.0.2"
interface = "sync"
track_file = "/run/router/ha-ready"
watch = ["192.168.1.1", "2001:db8:1::1"]
"""


def test_a_pair_member_config() -> None:
    cfg = parse(GOOD.encode(), "ha.toml")
    assert cfg.ha.enabled and cfg.ha.mode == "ftfw" and cfg.ha.tables == ("connections",)
    assert cfg.interfaces[0].kernel_multicast and not cfg.interfaces[1].kernel_multicast
    assert not parse(BASE.encode(), "x.toml").ha.enabled


@pytest.mark.parametrize("change, key, words", [
    (('local = "10.99.0.1"', ""), "ha.local", "is required"),
    (('peer = "10.99.0.2"', 'peer = "10.99.0.1"'), "ha.peer", "the local address"),
    (('peer = "10.99.0.2"', 'peer = "2001:db8::2"'), "ha.peer", "IPv4"),
    (('mode = "ftfw"', 'mode = "alarm"'), "ha.mode", "must be one of"),
    (('interface = "sync"', 'interface = "eth1"'), "ha.interface", "a link of its own"),
    (('track_file = "/run/router/ha-ready"', 'track_file = "ready"'), "ha.track_file",
     "absolute"),
    (('watch = ["192.168.1.1", "2001:db8:1::1"]', 'watch = ["gateway"]'), "ha.watch[0]",
     "not an address"),
    (('interface = "sync"', 'interface = "sync"\ntables = ["leases"]'), "ha.tables[0]",
     "must be one of"),
])
def test_bad_ha_sections_are_refused_with_the_key(change: tuple[str, str], key: str,
                                                  words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(GOOD.replace(*change).encode(), "ha.toml")
    assert e.value.key == key and words in e.value.reason, e.value


def test_kernel_multicast_is_for_attached_links() -> None:
    text = BASE.replace('attach = "eth0"\n', "")
    text = text.replace('zone = "wan"', 'zone = "wan"\nkernel_multicast = true')
    with pytest.raises(ConfigError) as e:
        parse(text.encode(), "x.toml")
    assert e.value.key == "interface[1].kernel_multicast"
