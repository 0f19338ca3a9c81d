"""The cdef and the C headers agree on every public struct."""

import re
from pathlib import Path

import pytest
from router.native._rt import ffi, lib

import router.native

# The one list: every struct the cdef declares (C's RT_ABI_STRUCTS must know
# each, and a struct added to the cdef is checked without touching this file).
CDEF = (Path(router.native.__file__).parent / "rt.cdef").read_text()
STRUCTS = re.findall(r"^struct (rt_\w+) \{", CDEF, re.M)


def test_every_cdef_struct_is_listed() -> None:
    assert len(STRUCTS) >= 18
    header = (Path(router.native.__file__).parent / "rt.h").read_text()
    listed = re.search(r"#define RT_ABI_STRUCTS\(X\)(.*?)\nuint32_t", header, re.S)
    assert listed is not None
    assert sorted(re.findall(r"X\((\w+)\)", listed.group(1))) == sorted(STRUCTS)


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_sizes_match(name: str) -> None:
    c_size = lib.rt_abi_sizeof(name.encode())
    assert c_size > 0, f"C does not know struct {name}"
    assert ffi.sizeof(f"struct {name}") == c_size


def test_unknown_struct_is_zero() -> None:
    assert lib.rt_abi_sizeof(b"no_such_struct") == 0


def test_name_tables_are_complete() -> None:
    from router import datapath

    assert len(datapath.TCP_STATE_NAMES) == 10
    assert datapath.TCP_STATE_NAMES[0] == "NONE"
    assert datapath.TCP_STATE_NAMES[9] == "SYN_SENT2"
    assert datapath.DROP_NAMES[0] == "none"
    assert len(set(datapath.DROP_NAMES)) == len(datapath.DROP_NAMES)
    # Defaults that meet BEHAVE (RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-2).
    d = datapath.TIMEOUT_DEFAULTS
    assert d["tcp_established"] == 432000 >= 7440
    for state in ("syn_sent", "syn_recv", "fin_wait", "close_wait", "last_ack", "time_wait",
                  "close", "syn_sent2"):
        assert d[f"tcp_{state}"] == 240, state
    assert d["udp"] == 120 and d["udp_stream"] == 300
    assert d["icmp"] == 60
    assert d["generic"] == 600


def test_requested_build_is_the_one_loaded() -> None:
    """With RT_NATIVE_PATH set (the sanitizer run), that build is in use."""
    import os

    import router.native as native
    from router.native import _rt

    path = os.environ.get("RT_NATIVE_PATH")
    loaded = _rt.__file__
    if path:
        assert loaded.startswith(path), loaded
    else:
        assert loaded.startswith(os.path.dirname(native.__file__)), loaded
