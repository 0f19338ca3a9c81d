"""The flow log's IPFIX (router/flowlog): messages as RFC 7011 lays them
out, records as the templates say, NAT records from connection events, and
the exporter's pacing (a real UDP socket on loopback as the collector)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from router.config import parse
from router.flowlog import ipfix
from router.flowlog.exporter import FlowExporter, flow_record
from router.native.names import DST_NAT, SEEN_REPLY, SRC_NAT
from router.native.records import CtEntry, Event
from tests.helpers import TWO_LINKS


def entry(**kw: Any) -> CtEntry:
    base: dict[str, Any] = dict(
        slot=3, family=4, proto=17, state=None, status=SEEN_REPLY | SRC_NAT,
        src=("192.168.77.2", "203.0.113.10"), dst=("203.0.113.10", "203.0.113.1"),
        sport=(40000, 9000), dport=(9000, 1030), timeout_ms=30000, age_ms=2500,
        packets=(3, 2), bytes=(120, 80))
    base.update(kw)
    return CtEntry(**base)


def test_templates_and_records_agree() -> None:
    """Each template's field lengths add up to its record; the template set
    holds all of them, each field an IANA element id and length."""
    for t, fields in ipfix.TEMPLATES.items():
        assert sum(n for _, n in fields) == ipfix.FORMATS[t].size
    body = ipfix.template_set()
    set_id, length = struct.unpack("!HH", body[:4])
    assert set_id == 2 and length == len(body)
    off, seen = 4, []
    while off < len(body):
        tid, count = struct.unpack("!HH", body[off:off + 4])
        seen.append(tid)
        off += 4 + 4 * count
    assert seen == list(ipfix.TEMPLATES) and off == len(body)


def test_a_source_nat_record_names_inside_and_outside() -> None:
    rec, nat = flow_record(Event("DESTROY", entry()), 1_000_000)
    assert nat and rec.template == ipfix.NAT4 and rec.nat_event == ipfix.NAT44_DELETE
    assert (rec.src, rec.sport, rec.post_src, rec.post_sport) == \
        ("192.168.77.2", 40000, "203.0.113.1", 1030)
    assert (rec.dst, rec.dport, rec.post_dst, rec.post_dport) == \
        ("203.0.113.10", 9000, "203.0.113.10", 9000)
    assert (rec.start_ms, rec.end_ms) == (1_000_000 - 2500, 1_000_000)
    raw = rec.encode()
    assert len(raw) == ipfix.FORMATS[ipfix.NAT4].size
    vals = ipfix.FORMATS[ipfix.NAT4].unpack(raw)
    assert vals[8] == 0 and vals[9:11] == (5, 200)   # no ICMP type; packets, octets
    assert vals[-1] == ipfix.NAT44_DELETE


def test_a_forward_record_has_the_inside_host_as_post_nat_destination() -> None:
    e = entry(proto=6, state="ESTABLISHED", status=SEEN_REPLY | DST_NAT,
              src=("198.51.100.7", "192.168.77.2"), dst=("203.0.113.1", "198.51.100.7"),
              sport=(50000, 80), dport=(8080, 50000))
    rec, nat = flow_record(Event("NEW", e), 5000)
    assert nat and rec.nat_event == ipfix.NAT44_CREATE and rec.end_ms == rec.start_ms
    assert (rec.post_dst, rec.post_dport, rec.post_src, rec.post_sport) == \
        ("192.168.77.2", 80, "198.51.100.7", 50000)


def test_an_icmp_record_has_its_identifier_as_port_and_its_type() -> None:
    e = entry(proto=1, sport=(0x4242, 1031), dport=(8 << 8, 0))
    rec, _ = flow_record(Event("NEW", e), 10**12)
    assert (rec.sport, rec.dport, rec.post_sport, rec.post_dport, rec.icmp_type_code) == \
        (0x4242, 0, 1031, 0, 8 << 8)


def test_message_header_counts_and_splits() -> None:
    recs = [flow_record(Event("NEW", entry(sport=(p, 9000))), 10**12)[0] for p in range(100)]
    groups = ipfix.split_records(recs, 1400)
    assert sum(map(len, groups)) == 100 and len(groups) > 1
    for g in groups:
        msg = ipfix.message([ipfix.data_set(ipfix.NAT4, [r.encode() for r in g])], 7, 42, 9)
        version, length, when, seq, domain = ipfix.HEADER.unpack(msg[:16])
        assert (version, length, when, seq, domain) == (10, len(msg), 7, 42, 9)
        assert len(msg) <= 1400


def test_the_exporter_keeps_the_rate_and_sends_to_the_collector() -> None:
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(2)
    port = collector.getsockname()[1]
    cfg = parse((TWO_LINKS + f'[ipfix]\ncollector = "127.0.0.1:{port}"\nrate = 5\n').encode(),
                "t.toml")

    class Hub:
        def add_sink(self, s: object) -> None: ...
        def remove_sink(self, s: object) -> None: ...

    class Log:
        def info(self, *a: object, **k: object) -> None: ...
        def warning(self, *a: object, **k: object) -> None: ...

    async def go() -> FlowExporter:
        ex = FlowExporter(lambda: cfg, Hub(), Log())  # type: ignore[arg-type]
        await ex.start()
        for p in range(20):
            ex.ct_event(Event("NEW", entry(sport=(p, 9000))))
        ex.ct_event(Event("NEW", entry(status=SEEN_REPLY)))   # not translated: not wanted
        await asyncio.sleep(0.3)
        await ex.stop()
        return ex
    ex = asyncio.run(go())
    assert ex.counts["sent"] == 5 and ex.counts["rate_limited"] == 15
    first = collector.recv(65535)
    assert struct.unpack("!H", first[16:18])[0] == 2      # templates first
    data = collector.recv(65535)
    assert struct.unpack("!H", data[16:18])[0] == ipfix.NAT4
    assert ipfix.HEADER.unpack(data[:16])[3] == 0          # no data record before it
    collector.close()
