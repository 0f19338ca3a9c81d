"""The cdef and the C headers agree on every public struct."""

import pytest

from router.native import ffi, lib

STRUCTS = ["rt_dp_params", "rt_iface_cfg", "rt_route_cfg", "rt_nat_cfg", "rt_dnat_cfg",
           "rt_tables", "rt_lb_slot", "rt_fw_rule",
           "rt_pkt", "rt_iface_stats", "rt_worker_stats", "rt_sweep_result", "rt_ct_entry"]


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

    path = os.environ.get("RT_NATIVE_PATH")
    loaded = native._rt.__file__  # type: ignore[attr-defined]
    if path:
        assert loaded.startswith(path), loaded
    else:
        assert loaded.startswith(os.path.dirname(native.__file__)), loaded
