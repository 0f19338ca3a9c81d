"""PCP messages (RFC 6887) off and onto the wire, and nothing else: no
state, no policy, so that every byte a LAN host can send is parsed here and
fuzzed (tests/fuzz/fuzz_python.py) without a router around it.

A request is refused here only for what its bytes say; ``Malformed``
carries the result code and whatever of the request could be read, since
an error response copies the request's opcode data and options (RFC 6887
section 7.2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from router.native.names import PM_FILTERS

VERSION = 2
MAX_MESSAGE = 1100  # RFC 6887 section 7: larger requests are malformed
HEADER = 24
OP_ANNOUNCE, OP_MAP, OP_PEER = 0, 1, 2
OPCODE_DATA = {OP_ANNOUNCE: 0, OP_MAP: 36, OP_PEER: 56}
OPT_THIRD_PARTY, OPT_PREFER_FAILURE, OPT_FILTER = 1, 2, 3
MAX_FILTERS = PM_FILTERS  # FILTER options one mapping keeps (the data plane's)

# Result codes (RFC 6887 section 7.4).
SUCCESS = 0
UNSUPP_VERSION = 1
NOT_AUTHORIZED = 2
MALFORMED_REQUEST = 3
UNSUPP_OPCODE = 4
UNSUPP_OPTION = 5
MALFORMED_OPTION = 6
NETWORK_FAILURE = 7
NO_RESOURCES = 8
UNSUPP_PROTOCOL = 9
USER_EX_QUOTA = 10
CANNOT_PROVIDE_EXTERNAL = 11
ADDRESS_MISMATCH = 12
EXCESSIVE_REMOTE_PEERS = 13

Address = IPv4Address | IPv6Address
Filter = tuple[IPv4Network | IPv6Network, int]


class Malformed(Exception):
    def __init__(self, code: int, reason: str, opcode: int = 0, lifetime: int = 0,
                 body: bytes = b"") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.opcode = opcode
        self.lifetime = lifetime
        self.body = body  # the opcode data and options, copied into the answer


@dataclass
class Request:
    opcode: int
    lifetime: int
    client: Address          # the client's address as it wrote it
    body: bytes              # opcode data and options, as sent
    nonce: bytes = b""
    proto: int = 0
    int_port: int = 0
    ext_port: int = 0        # suggested
    ext_addr: Address | None = None  # suggested; None: any (all zeros)
    peer_port: int = 0       # PEER
    peer_addr: Address | None = None
    third_party: Address | None = None
    prefer_failure: bool = False
    filters: list[Filter] = field(default_factory=list)
    clear_filters: bool = False  # a FILTER with prefix length 0
    options: bytes = b""     # the options the server processed, for the answer


def unmap(raw: bytes) -> Address:
    """A 16-byte PCP address: IPv4-mapped (::ffff:a.b.c.d) is IPv4."""
    a = IPv6Address(raw)
    return a.ipv4_mapped or a


def mapped(a: Address | None) -> bytes:
    if a is None:
        return bytes(16)
    if a.version == 4:
        return bytes(10) + b"\xff\xff" + a.packed
    return a.packed


def _zero(a: Address) -> bool:
    return int(a) == 0


def parse(data: bytes) -> Request:
    """The request in ``data`` (version 2 already checked by the caller);
    raises Malformed."""
    if len(data) < HEADER or len(data) > MAX_MESSAGE or len(data) % 4:
        raise Malformed(MALFORMED_REQUEST, f"{len(data)} bytes: a request is 24 to 1100, a "
                        "multiple of 4", opcode=data[1] & 0x7F if len(data) > 1 else 0)
    opcode = data[1] & 0x7F
    lifetime = struct.unpack_from("!I", data, 4)[0]
    client = unmap(data[8:24])
    body = data[HEADER:]
    if opcode not in OPCODE_DATA:
        raise Malformed(UNSUPP_OPCODE, f"opcode {opcode}", opcode, body=body)
    need = OPCODE_DATA[opcode]
    if len(body) < need:
        raise Malformed(MALFORMED_REQUEST, f"opcode {opcode} needs {need} bytes of data",
                        opcode, body=body)
    r = Request(opcode=opcode, lifetime=lifetime, client=client, body=body)
    if opcode in (OP_MAP, OP_PEER):
        r.nonce = body[0:12]
        r.proto = body[12]
        r.int_port, r.ext_port = struct.unpack_from("!HH", body, 16)
        ext = unmap(body[20:36])
        r.ext_addr = None if _zero(ext) else ext
    if opcode == OP_PEER:
        r.peer_port = struct.unpack_from("!H", body, 36)[0]
        r.peer_addr = unmap(body[40:56])
    _options(r, body[need:])
    return r


def _options(r: Request, opts: bytes) -> None:
    kept = bytearray()
    off = 0
    while off < len(opts):
        if off + 4 > len(opts):
            raise Malformed(MALFORMED_OPTION, "an option header past the end", r.opcode,
                            body=r.body)
        code, length = opts[off], struct.unpack_from("!H", opts, off + 2)[0]
        padded = (length + 3) & ~3
        data = opts[off + 4:off + 4 + length]
        if off + 4 + padded > len(opts):
            raise Malformed(MALFORMED_OPTION, f"option {code} runs past the end", r.opcode,
                            body=r.body)
        if _option(r, code, data):
            kept += opts[off:off + 4 + padded]
        off += 4 + padded
    r.options = bytes(kept)


def _option(r: Request, code: int, data: bytes) -> bool:
    """Reads one option into ``r``; True if the server processed it (it
    goes back in the answer)."""
    if code == OPT_THIRD_PARTY:
        if len(data) != 16 or r.third_party is not None:
            raise Malformed(MALFORMED_OPTION, "THIRD_PARTY: one, of 16 bytes", r.opcode,
                            body=r.body)
        r.third_party = unmap(data)
        return True
    if code == OPT_PREFER_FAILURE:
        if r.opcode != OP_MAP or data:
            raise Malformed(MALFORMED_OPTION, "PREFER_FAILURE: empty, with MAP only",
                            r.opcode, body=r.body)
        r.prefer_failure = True
        return True
    if code == OPT_FILTER:
        if r.opcode != OP_MAP or len(data) != 20:
            raise Malformed(MALFORMED_OPTION, "FILTER: 20 bytes, with MAP only", r.opcode,
                            body=r.body)
        _filter(r, data)
        return True
    if code < 128:  # mandatory to process, and unknown
        raise Malformed(UNSUPP_OPTION, f"option {code}", r.opcode, body=r.body)
    return False  # optional and unknown: ignored


def _filter(r: Request, data: bytes) -> None:
    plen, port = data[1], struct.unpack_from("!H", data, 2)[0]
    raw = IPv6Address(data[4:20])
    if plen > 128:
        raise Malformed(MALFORMED_OPTION, f"FILTER prefix length {plen}", r.opcode,
                        body=r.body)
    if plen == 0:
        r.clear_filters = True
        return
    v4 = raw.ipv4_mapped
    try:
        if v4 is not None and plen >= 96:
            net: IPv4Network | IPv6Network = ip_network(f"{v4}/{plen - 96}", strict=False)
        else:
            net = ip_network(f"{raw}/{plen}", strict=False)
    except ValueError as e:
        raise Malformed(MALFORMED_OPTION, f"FILTER: {e}", r.opcode, body=r.body) from None
    if len(r.filters) >= MAX_FILTERS:
        raise Malformed(EXCESSIVE_REMOTE_PEERS, f"more than {MAX_FILTERS} FILTER options",
                        r.opcode, body=r.body)
    r.filters.append((net, port))


def answer(opcode: int, result: int, lifetime: int, epoch: int, body: bytes) -> bytes:
    """A response: the header and ``body`` (opcode data and options)."""
    return struct.pack("!BBBBII12x", VERSION, 0x80 | (opcode & 0x7F), 0, result,
                       lifetime & 0xFFFFFFFF, epoch & 0xFFFFFFFF) + body


def map_body(r: Request, ext_port: int, ext_addr: Address | None) -> bytes:
    """The opcode data of a MAP or PEER answer: the request's, with the
    assigned external port and address, then the processed options."""
    body = bytearray(r.body[:OPCODE_DATA[r.opcode]])
    struct.pack_into("!H", body, 18, ext_port)
    body[20:36] = mapped(ext_addr)
    return bytes(body) + r.options


def unsolicited_map(nonce: bytes, proto: int, int_port: int, ext_port: int,
                    ext_addr: Address, lifetime: int, epoch: int,
                    peer: tuple[Address, int] | None = None) -> bytes:
    """A MAP (or PEER) response nobody asked for: a mapping's new external
    address, sent to its client (RFC 6887 section 14.2)."""
    body = nonce + struct.pack("!B3xHH", proto, int_port, ext_port) + mapped(ext_addr)
    if peer is not None:
        body += struct.pack("!H2x", peer[1]) + mapped(peer[0])
    return answer(OP_PEER if peer else OP_MAP, SUCCESS, lifetime, epoch, body)


def announce(epoch: int) -> bytes:
    """An unsolicited ANNOUNCE (RFC 6887 section 14.1.3)."""
    return answer(OP_ANNOUNCE, SUCCESS, 0, epoch, b"")


def request(opcode: int, lifetime: int, client: Address, body: bytes) -> bytes:
    """A request (the tests' client, and the fuzzer's seeds)."""
    return struct.pack("!BBHI", VERSION, opcode, 0, lifetime) + mapped(client) + body
