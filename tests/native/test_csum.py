"""Incremental checksum updates (RFC 1624) equal a full recompute."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from router.native._rt import ffi, lib

from tests.packets import checksum


def c_full(data: bytes) -> int:
    return int(lib.rt_csum_full(data, len(data)))


@given(st.binary(min_size=0, max_size=2000))
def test_full_checksum_matches_reference(data: bytes) -> None:
    # rt_csum_full returns the field value in memory order.
    got = c_full(data)
    want = checksum(data)
    assert struct.pack("=H", got) == struct.pack("!H", want)


# RFC 1624 section 3: equation 3 is exact except when every other covered
# word is zero, which no IP header or pseudo-header ever is: each test packet
# starts with a fixed non-zero word (like an IPv4 version byte) that is never
# the one replaced.
HEAD = b"\x45\x00\x45\x00"


@settings(max_examples=500)
@given(st.binary(min_size=8, max_size=600).filter(lambda b: len(b) % 2 == 0),
       st.data())
def test_replace2_equals_recompute(data: bytes, d: st.DataObject) -> None:
    # A packet with a correct checksum in its first two bytes.
    body = bytearray(b"\0\0" + HEAD + data)
    struct.pack_into("!H", body, 0, checksum(bytes(body)))
    assert checksum(bytes(body)) == 0
    off = d.draw(st.integers(3, len(body) // 2 - 1)) * 2
    new = d.draw(st.integers(0, 0xFFFF))
    old_raw = bytes(body[off:off + 2])
    field = ffi.new("uint8_t[2]", bytes(body[0:2]))
    lib.rt_csum_replace2(field, struct.unpack("=H", old_raw)[0],
                         struct.unpack("=H", struct.pack("!H", new))[0])
    body[off:off + 2] = struct.pack("!H", new)
    body[0:2] = bytes(field)
    assert checksum(bytes(body)) == 0


@settings(max_examples=500)
@given(st.binary(min_size=8, max_size=600).filter(lambda b: len(b) % 4 == 0),
       st.data())
def test_replace4_equals_recompute(data: bytes, d: st.DataObject) -> None:
    body = bytearray(b"\0\0\0\0" + HEAD + data)
    struct.pack_into("!H", body, 0, checksum(bytes(body)))
    off = d.draw(st.integers(2, len(body) // 4 - 1)) * 4
    new = d.draw(st.binary(min_size=4, max_size=4))
    old_raw = bytes(body[off:off + 4])
    field = ffi.new("uint8_t[2]", bytes(body[0:2]))
    lib.rt_csum_replace4(field, struct.unpack("=I", old_raw)[0], struct.unpack("=I", new)[0])
    body[off:off + 4] = new
    body[0:2] = bytes(field)
    assert checksum(bytes(body)) == 0


def test_replace_keeps_valid_zero_sum_data() -> None:
    # Changing a word to itself must not turn a valid 0x0000 into 0xffff.
    body = bytearray(b"\0\0" + b"\xff\xff" * 3)
    struct.pack_into("!H", body, 0, checksum(bytes(body)))
    field = ffi.new("uint8_t[2]", bytes(body[0:2]))
    lib.rt_csum_replace2(field, 0xFFFF, 0xFFFF)
    body[0:2] = bytes(field)
    assert checksum(bytes(body)) == 0
