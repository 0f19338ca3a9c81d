"""NAT-PMP messages (RFC 6886) off and onto the wire; pure, like
``pcp_wire``, and fuzzed with it."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

VERSION = 0
OP_ADDRESS, OP_MAP_UDP, OP_MAP_TCP = 0, 1, 2
PROTO_OF = {OP_MAP_UDP: 17, OP_MAP_TCP: 6}

# Result codes (RFC 6886 section 3.5).
SUCCESS = 0
UNSUPP_VERSION = 1
REFUSED = 2          # not authorized
NETWORK_FAILURE = 3  # no external address (yet)
NO_RESOURCES = 4
UNSUPP_OPCODE = 5


class Malformed(Exception):
    def __init__(self, code: int, opcode: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.opcode = opcode


@dataclass(frozen=True)
class Request:
    opcode: int
    int_port: int = 0
    ext_port: int = 0   # suggested
    lifetime: int = 0


def parse(data: bytes) -> Request:
    """The request in ``data`` (version 0 checked by the caller); raises
    Malformed with the result code to answer, or None-worthy ValueError for
    what gets no answer at all (a response sent to the server)."""
    if len(data) < 2:
        raise ValueError("shorter than a request")
    opcode = data[1]
    if opcode >= 128:
        raise ValueError("a response, not a request")
    if opcode == OP_ADDRESS:
        return Request(opcode)
    if opcode not in PROTO_OF:
        raise Malformed(UNSUPP_OPCODE, opcode, f"opcode {opcode}")
    if len(data) < 12:
        raise Malformed(NO_RESOURCES, opcode, f"a mapping request of {len(data)} bytes")
    int_port, ext_port, lifetime = struct.unpack_from("!HHI", data, 4)
    return Request(opcode, int_port, ext_port, lifetime)


def _head(opcode: int, result: int, epoch: int) -> bytes:
    return struct.pack("!BBHI", VERSION, 128 + (opcode & 0x7F), result, epoch & 0xFFFFFFFF)


def address_answer(result: int, epoch: int, addr: IPv4Address | None) -> bytes:
    return _head(OP_ADDRESS, result, epoch) + (addr.packed if addr else bytes(4))


def map_answer(opcode: int, result: int, epoch: int, int_port: int, ext_port: int,
               lifetime: int) -> bytes:
    return _head(opcode, result, epoch) + struct.pack("!HHI", int_port, ext_port,
                                                      lifetime & 0xFFFFFFFF)


def error_answer(opcode: int, result: int, epoch: int) -> bytes:
    """For an unsupported version or opcode: the header alone (RFC 6886
    3.5), with the highest version the server speaks."""
    return _head(opcode, result, epoch)


def request(opcode: int, int_port: int = 0, ext_port: int = 0, lifetime: int = 0) -> bytes:
    """A request (for the tests and the fuzzer's seeds)."""
    if opcode == OP_ADDRESS:
        return bytes([VERSION, OP_ADDRESS])
    return struct.pack("!BBHHHI", VERSION, opcode, 0, int_port, ext_port, lifetime)
