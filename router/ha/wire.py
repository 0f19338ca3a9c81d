"""conntrackd's sync protocol, version 1, on the wire: pure encoding and
decoding, no sockets (fuzzed by tests/fuzz/fuzz_ha.py).

A datagram holds one or more messages back to back.  Each starts with an
8-byte header: a byte with the version (high nibble) and the type (low
nibble), a flags byte, the message length (network order, the header
included) and a sequence number.  Control messages that name a range of
sequence numbers (ACK, NACK, RESYNC) are 16 bytes: the header, then
``from`` and ``to``.  A connection message (NEW, UPDATE, DESTROY) carries
attributes after the header: a 2-byte length (the 4-byte attribute header
included, padding not) and a 2-byte type, then the value, padded to 4
bytes.  Values are in network order; address groups are source then
destination; the port group is source port then destination port.

Every length is checked before it is used, and a message that does not
parse is counted by reason (conntrackd's own: bad version, bad size,
truncated, bad type, bad payload) and skipped, never trusted.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

VERSION = 1

# Message types (the low nibble).
T_CT_NEW, T_CT_UPD, T_CT_DEL = 0, 1, 2
T_EXP_NEW, T_EXP_UPD, T_EXP_DEL = 3, 4, 5
T_STATE_MAX = T_EXP_DEL
T_CTL = 10
TYPE_NAMES = {T_CT_NEW: "NEW", T_CT_UPD: "UPDATE", T_CT_DEL: "DESTROY"}

# Flags.
F_RESYNC = 1 << 1
F_NACK = 1 << 2
F_ACK = 1 << 3
F_ALIVE = 1 << 4
F_HELLO = 1 << 5
F_HELLO_BACK = 1 << 6
RANGE_FLAGS = F_ACK | F_NACK | F_RESYNC  # control messages with from/to

HDR = struct.Struct("!BBHI")
ACK = struct.Struct("!BBHIII")
HDR_SIZE = HDR.size    # 8
ACK_SIZE = ACK.size    # 16
ATTR = struct.Struct("!HH")

# Attribute types (conntrackd's NTA_*), the ones this router reads or writes.
NTA_IPV4, NTA_IPV6, NTA_L4PROTO, NTA_PORT = 0, 1, 2, 3
NTA_TCP_STATE, NTA_STATUS, NTA_TIMEOUT, NTA_MARK = 4, 5, 6, 7
NTA_SNAT_IPV4, NTA_DNAT_IPV4, NTA_SPAT_PORT, NTA_DPAT_PORT = 12, 13, 14, 15
NTA_ICMP_TYPE, NTA_ICMP_CODE, NTA_ICMP_ID = 22, 23, 24
# Sizes of the fixed-size attributes (value only); others are skipped.
_SIZES = {NTA_IPV4: 8, NTA_IPV6: 32, NTA_L4PROTO: 1, NTA_PORT: 4, NTA_TCP_STATE: 1,
          NTA_STATUS: 4, NTA_TIMEOUT: 4, NTA_MARK: 4, 8: 8, 9: 32, 10: 1, 11: 4,
          NTA_SNAT_IPV4: 4, NTA_DNAT_IPV4: 4, NTA_SPAT_PORT: 2, NTA_DPAT_PORT: 2, 16: 24,
          17: 1, 18: 4, 19: 4, 20: 1, 21: 1, NTA_ICMP_TYPE: 1, NTA_ICMP_CODE: 1,
          NTA_ICMP_ID: 2, 25: 1, 26: 1}
NTA_MAX = 64  # conntrackd refuses types past its own maximum; this skips them

# Linux conntrack status bits (IPS_*) that mean the same on both sides.
IPS_SEEN_REPLY, IPS_ASSURED, IPS_CONFIRMED = 0x02, 0x04, 0x08
IPS_SRC_NAT, IPS_DST_NAT = 0x10, 0x20
IPS_SRC_NAT_DONE, IPS_DST_NAT_DONE = 0x80, 0x100
IPS_SYNCED = (IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_SRC_NAT | IPS_DST_NAT |
              IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE)

ERRORS = ("bad_version", "bad_size", "truncated", "bad_type", "bad_payload")


@dataclass(frozen=True, slots=True)
class SyncCt:
    """A connection as the sync protocol carries it: the original tuple,
    and what the reply tuple differs by (the NAT addresses and ports).
    For ICMP, ``sport`` is the identifier and ``dport`` type << 8 | code."""

    family: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    status: int
    timeout: int            # seconds
    state: int = 0          # TCP (Linux's numbering, which is the router's)
    mark: int = 0
    snat: str | None = None  # the reply's destination, when source NAT
    dnat: str | None = None  # the reply's source, when destination NAT
    spat: int | None = None  # the reply's destination port, when source port NAT
    dpat: int | None = None  # the reply's source port, when destination port NAT

    @property
    def key(self) -> tuple[int, int, str, str, int, int]:
        return (self.family, self.proto, self.src, self.dst, self.sport, self.dport)


@dataclass(frozen=True, slots=True)
class Msg:
    type: int
    flags: int
    seq: int
    first: int = 0           # ACK, NACK, RESYNC: the range
    last: int = 0
    ct: SyncCt | None = None  # NEW, UPDATE, DESTROY

    @property
    def is_data(self) -> bool:
        return self.type <= T_STATE_MAX and not self.flags & ~(F_HELLO | F_HELLO_BACK)

    def is_ctl(self, flag: int) -> bool:
        return self.type == T_CTL and bool(self.flags & flag)


class Malformed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- encoding --------------------------------------------------------------

def ctl(flags: int, seq: int, first: int = 0, last: int = 0) -> bytes:
    """A control message: 16 bytes with a range for ACK, NACK and RESYNC,
    else the 8-byte header (ALIVE)."""
    head = VERSION << 4 | T_CTL
    if flags & RANGE_FLAGS:
        return ACK.pack(head, flags, ACK_SIZE, seq & 0xFFFFFFFF, first & 0xFFFFFFFF,
                        last & 0xFFFFFFFF)
    return HDR.pack(head, flags, HDR_SIZE, seq & 0xFFFFFFFF)


def _attr(kind: int, value: bytes) -> bytes:
    n = ATTR.size + len(value)
    return ATTR.pack(n, kind) + value + b"\0" * (-n % 4)


def _addr(family: int, a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6, a)


def ct_msg(mtype: int, flags: int, seq: int, ct: SyncCt) -> bytes:
    """A NEW, UPDATE or DESTROY message, its attributes in conntrackd's
    order."""
    fam = ct.family
    out = [_attr(NTA_IPV4 if fam == 4 else NTA_IPV6, _addr(fam, ct.src) + _addr(fam, ct.dst)),
           _attr(NTA_STATUS, struct.pack("!I", ct.status)),
           _attr(NTA_L4PROTO, bytes((ct.proto,)))]
    if ct.proto in (6, 17, 132, 33):
        out.append(_attr(NTA_PORT, struct.pack("!HH", ct.sport, ct.dport)))
    if ct.proto == 6:
        out.append(_attr(NTA_TCP_STATE, bytes((ct.state,))))
    elif ct.proto in (1, 58):
        out += [_attr(NTA_ICMP_TYPE, bytes((ct.dport >> 8,))),
                _attr(NTA_ICMP_CODE, bytes((ct.dport & 0xFF,))),
                _attr(NTA_ICMP_ID, struct.pack("!H", ct.sport))]
    out.append(_attr(NTA_TIMEOUT, struct.pack("!I", ct.timeout)))
    if ct.mark:
        out.append(_attr(NTA_MARK, struct.pack("!I", ct.mark)))
    if fam == 4:
        if ct.snat is not None:
            out.append(_attr(NTA_SNAT_IPV4, _addr(4, ct.snat)))
        if ct.dnat is not None:
            out.append(_attr(NTA_DNAT_IPV4, _addr(4, ct.dnat)))
        if ct.spat is not None:
            out.append(_attr(NTA_SPAT_PORT, struct.pack("!H", ct.spat)))
        if ct.dpat is not None:
            out.append(_attr(NTA_DPAT_PORT, struct.pack("!H", ct.dpat)))
    body = b"".join(out)
    n = HDR_SIZE + len(body)
    return HDR.pack(VERSION << 4 | mtype, flags, n, seq & 0xFFFFFFFF) + body


# ---- decoding --------------------------------------------------------------

def split(data: bytes) -> tuple[list[Msg], list[str]]:
    """The messages of one datagram, and the reasons of those that did not
    parse.  A bad length ends the datagram (nothing after it can be found);
    a bad message with a good length is skipped alone."""
    msgs: list[Msg] = []
    errors: list[str] = []
    off = 0
    while off < len(data):
        remain = len(data) - off
        if remain < HDR_SIZE:
            errors.append("truncated")
            break
        head, flags, n, seq = HDR.unpack_from(data, off)
        mtype = head & 0x0F
        ranged = mtype == T_CTL and flags & RANGE_FLAGS
        if n < (ACK_SIZE if ranged else HDR_SIZE) or n > remain:
            errors.append("truncated" if n > remain else "bad_size")
            break
        try:
            msgs.append(_message(data[off:off + n], head, flags, seq))
        except Malformed as e:
            errors.append(e.reason)
        off += n
    return msgs, errors


def _message(raw: bytes, head: int, flags: int, seq: int) -> Msg:
    if head >> 4 != VERSION:
        raise Malformed("bad_version")
    mtype = head & 0x0F
    if mtype == T_CTL:
        if flags & RANGE_FLAGS:
            _h, _f, _n, _s, first, last = ACK.unpack_from(raw)
            return Msg(T_CTL, flags, seq, first, last)
        return Msg(T_CTL, flags, seq)
    if mtype > T_STATE_MAX or flags & ~(F_HELLO | F_HELLO_BACK):
        raise Malformed("bad_type")
    if mtype >= T_EXP_NEW:  # expectations: this router has no helpers
        return Msg(mtype, flags, seq)
    return Msg(mtype, flags, seq, ct=parse_ct(raw[HDR_SIZE:]))


def parse_ct(body: bytes) -> SyncCt:
    attrs: dict[int, bytes] = {}
    off = 0
    while len(body) - off > ATTR.size:
        n, kind = ATTR.unpack_from(body, off)
        if n < ATTR.size or n > len(body) - off:
            raise Malformed("bad_payload")
        size = _SIZES.get(kind)
        if size is not None and n != ATTR.size + size:
            raise Malformed("bad_payload")
        if kind < NTA_MAX:
            attrs[kind] = body[off + ATTR.size:off + n]
        off += (n + 3) & ~3
    return _ct(attrs)


def _ct(a: dict[int, bytes]) -> SyncCt:
    if NTA_IPV4 in a:
        fam, raw = 4, a[NTA_IPV4]
        src, dst = socket.inet_ntop(socket.AF_INET, raw[:4]), socket.inet_ntop(socket.AF_INET,
                                                                               raw[4:])
    elif NTA_IPV6 in a:
        fam, raw = 6, a[NTA_IPV6]
        # ipaddress's text: the one form (RFC 5952) the router's records use.
        src, dst = str(IPv6Address(raw[:16])), str(IPv6Address(raw[16:]))
    else:
        raise Malformed("bad_payload")
    if NTA_L4PROTO not in a:
        raise Malformed("bad_payload")
    proto = a[NTA_L4PROTO][0]
    sport = dport = 0
    if NTA_PORT in a:
        sport, dport = struct.unpack("!HH", a[NTA_PORT])
    if proto in (1, 58):
        if NTA_ICMP_TYPE not in a:
            raise Malformed("bad_payload")
        dport = a[NTA_ICMP_TYPE][0] << 8 | a.get(NTA_ICMP_CODE, b"\0")[0]
        sport = struct.unpack("!H", a.get(NTA_ICMP_ID, b"\0\0"))[0]
    elif proto in (6, 17) and NTA_PORT not in a:
        raise Malformed("bad_payload")

    def u32(k: int) -> int:
        return struct.unpack("!I", a[k])[0] if k in a else 0

    def v4(k: int) -> str | None:
        return socket.inet_ntop(socket.AF_INET, a[k]) if k in a and fam == 4 else None

    def port(k: int) -> int | None:
        return struct.unpack("!H", a[k])[0] if k in a else None

    return SyncCt(family=fam, proto=proto, src=src, dst=dst, sport=sport, dport=dport,
                  status=u32(NTA_STATUS), timeout=u32(NTA_TIMEOUT),
                  state=a[NTA_TCP_STATE][0] if NTA_TCP_STATE in a else 0, mark=u32(NTA_MARK),
                  snat=v4(NTA_SNAT_IPV4), dnat=v4(NTA_DNAT_IPV4), spat=port(NTA_SPAT_PORT),
                  dpat=port(NTA_DPAT_PORT))


# ---- sequence numbers (RFC 1982-style, as conntrackd compares them) ---------

def before(a: int, b: int) -> bool:
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


def between(seq: int, first: int, last: int) -> bool:
    """first <= seq <= last, modulo 2^32."""
    return ((last - first) & 0xFFFFFFFF) >= ((seq - first) & 0xFFFFFFFF)
