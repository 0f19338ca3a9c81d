"""IPFIX messages (RFC 7011) carrying connection and NAT events (RFC 8158).

Three templates: IPv4 connections with the NAT elements (the inside and
outside address and port of each end, ``natEvent``), IPv4 connections that
were not translated, and IPv6 connections (routed, or NAT66: the post-NAT
IPv6 elements).  A record is
written when a connection opens (``natEvent`` 1, NAT44 session create,
with its start) and when it ends (2, session delete, with its start, end
and its packets and bytes each way), so that a collector can answer who
used which outside port when (RFC 6888 REQ-12).

Only encoding here; router/flowlog/exporter.py paces and sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import ip_address

VERSION = 10
HEADER = struct.Struct("!HHIII")        # version, length, export time, sequence, domain
SET_HEADER = struct.Struct("!HH")       # set id, length
TEMPLATE_SET = 2
NAT4, PLAIN6, PLAIN4 = 256, 257, 258    # the template ids

# RFC 8158 natEvent values.
NAT44_CREATE, NAT44_DELETE = 1, 2
# Not a NAT event: a connection that was not translated (events = "all").
NO_NAT = 0

# (Information Element id, length) of each template, in record order, from
# IANA's registry: observationTimeMilliseconds 323, flowStartMilliseconds
# 152, flowEndMilliseconds 153, protocolIdentifier 4, source/destination
# IPv4 8/12 and IPv6 27/28, ports 7/11, ICMP type and code (collectors print
# an ICMP flow by it, nfdump among them), packetDeltaCount 2 and
# octetDeltaCount 1 (both ways: the connection is the flow), initiator and
# responder packets 298/299 and octets 231/232; then the translation:
# postNAT IPv4 225/226 (IPv6 281/282), postNAPT ports 227/228, natEvent 230.
COMMON = ((323, 8), (152, 8), (153, 8), (4, 1))
COUNTS = ((2, 8), (1, 8), (298, 8), (299, 8), (231, 8), (232, 8))
ENDS4 = ((8, 4), (7, 2), (12, 4), (11, 2), (32, 2))      # icmpTypeCodeIPv4 32
ENDS6 = ((27, 16), (7, 2), (28, 16), (11, 2), (139, 2))  # icmpTypeCodeIPv6 139
TEMPLATES = {
    NAT4: (*COMMON, *ENDS4, *COUNTS, (225, 4), (227, 2), (226, 4), (228, 2), (230, 1)),
    PLAIN4: (*COMMON, *ENDS4, *COUNTS),
    # IPv6: routed, or NAT66 (RFC 8158 has no natEvent for it): the
    # addresses and ports after translation, equal to the first when none.
    PLAIN6: (*COMMON, *ENDS6, *COUNTS, (281, 16), (227, 2), (282, 16), (228, 2)),
}
FORMATS = {NAT4: struct.Struct("!QQQB4sH4sHHQQQQQQ4sH4sHB"),
           PLAIN4: struct.Struct("!QQQB4sH4sHHQQQQQQ"),
           PLAIN6: struct.Struct("!QQQB16sH16sHHQQQQQQ16sH16sH")}


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """One connection event, in the terms of the templates: ``src`` and
    ``dst`` as the connection opened (inside), ``post_src``/``post_dst``
    after translation (outside); times in milliseconds since the epoch."""

    family: int
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    post_src: str
    post_sport: int
    post_dst: str
    post_dport: int
    nat_event: int
    observed_ms: int
    start_ms: int
    end_ms: int
    packets: tuple[int, int] = (0, 0)
    octets: tuple[int, int] = (0, 0)
    icmp_type_code: int = 0   # ICMP: type << 8 | code (its ports: the identifier, 0)

    @property
    def template(self) -> int:
        if self.family == 6:
            return PLAIN6
        return NAT4 if self.nat_event != NO_NAT else PLAIN4

    def encode(self) -> bytes:
        t = self.template
        counts = (sum(self.packets), sum(self.octets), *self.packets, *self.octets)
        head = (self.observed_ms, self.start_ms, self.end_ms, self.proto,
                ip_address(self.src).packed, self.sport, ip_address(self.dst).packed,
                self.dport, self.icmp_type_code, *counts)
        if t == PLAIN4:
            return FORMATS[t].pack(*head)
        post = (ip_address(self.post_src).packed, self.post_sport,
                ip_address(self.post_dst).packed, self.post_dport)
        return FORMATS[t].pack(*head, *post, *((self.nat_event,) if t == NAT4 else ()))


def record_size(template: int) -> int:
    return FORMATS[template].size


def template_set() -> bytes:
    """Every template in one template set."""
    body = b""
    for tid, fields in TEMPLATES.items():
        body += struct.pack("!HH", tid, len(fields))
        body += b"".join(struct.pack("!HH", ie, n) for ie, n in fields)
    return SET_HEADER.pack(TEMPLATE_SET, SET_HEADER.size + len(body)) + body


def data_set(template: int, records: list[bytes]) -> bytes:
    body = b"".join(records)
    return SET_HEADER.pack(template, SET_HEADER.size + len(body)) + body


def message(sets: list[bytes], export_time: int, sequence: int, domain: int) -> bytes:
    """A message: the header, then the sets.  ``sequence`` counts the data
    records sent before this message (RFC 7011 3.1), modulo 2^32."""
    body = b"".join(sets)
    return HEADER.pack(VERSION, HEADER.size + len(body), export_time & 0xFFFFFFFF,
                       sequence & 0xFFFFFFFF, domain) + body


def split_records(records: list[FlowRecord], mtu: int) -> list[list[FlowRecord]]:
    """Records grouped into messages of at most ``mtu`` bytes (a data set
    per template in each)."""
    room = mtu - HEADER.size - 2 * SET_HEADER.size
    out: list[list[FlowRecord]] = []
    cur: list[FlowRecord] = []
    used = 0
    for r in records:
        n = record_size(r.template)
        if cur and used + n > room:
            out.append(cur)
            cur, used = [], 0
        cur.append(r)
        used += n
    if cur:
        out.append(cur)
    return out
