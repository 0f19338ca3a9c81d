"""conntrack-tools' filters (router/ctfilter.py) on entries in their JSON
form; the same options are compared with conntrack itself, on the kernel's
NAT, in tests/integration/test_ct_tools.py."""

from __future__ import annotations

from typing import Any

import pytest

from router.ctfilter import parse


def entry(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "id": 1, "family": "ipv4", "proto": "udp", "protonum": 17, "state": None,
        "status": 0x02 | 0x10, "mark": 0,
        "original": {"src": "192.168.77.2", "dst": "203.0.113.10", "sport": 40000,
                     "dport": 9000},
        "reply": {"src": "203.0.113.10", "dst": "203.0.113.1", "sport": 9000, "dport": 40000},
    }
    e.update(kw)
    return e


ICMP = entry(proto="icmp", protonum=1,
             original={"src": "192.168.77.2", "dst": "203.0.113.10", "type": 8, "code": 0,
                       "id": 77},
             reply={"src": "203.0.113.10", "dst": "203.0.113.1", "type": 0, "code": 0,
                    "id": 77})
FORWARD = entry(proto="tcp", protonum=6, state="ESTABLISHED", status=0x02 | 0x04 | 0x20,
                original={"src": "203.0.113.10", "dst": "203.0.113.1", "sport": 50000,
                          "dport": 8080},
                reply={"src": "192.168.77.2", "dst": "203.0.113.10", "sport": 80,
                       "dport": 50000})
ROUTED6 = entry(family="ipv6",
                original={"src": "2001:db8:77::2", "dst": "2001:db8:113::10", "sport": 1,
                          "dport": 2},
                reply={"src": "2001:db8:113::10", "dst": "2001:db8:77::2", "sport": 2,
                       "dport": 1})


@pytest.mark.parametrize(("args", "want"), [
    ({}, [True, True, True, True]),
    ({"family": "ipv6"}, [False, False, False, True]),
    ({"src": "2001:DB8:77::2"}, [False, False, False, True]),
    ({"src_nat": ""}, [True, True, False, False]),
    # An ICMP echo counts as translated at the destination too: its reply
    # tuple's identifier sits where the original's type and code are.
    ({"dst_nat": ""}, [False, True, True, False]),
    ({"dst_nat": "192.168.77.2:80"}, [False, False, True, False]),
    ({"dst_nat": "192.168.77.2:81"}, [False, False, False, False]),
    ({"src_nat": "203.0.113.1"}, [True, True, False, False]),
    ({"any_nat": "203.0.113.1"}, [True, True, False, False]),
    ({"src_nat": "", "dst_nat": ""}, [False, True, False, False]),
    ({"status": "ASSURED"}, [False, False, True, False]),
    ({"status": "unreplied"}, [False, False, False, False]),
    ({"status": "SEEN_REPLY,ASSURED"}, [False, False, True, False]),
    ({"mark": "0"}, [True, True, True, True]),
    ({"mark": "1/0xff"}, [False, False, False, False]),
    ({"zone": "0"}, [True, True, True, True]),
    ({"zone": 3}, [False, False, False, False]),
    ({"proto": "tcp", "state": "established"}, [False, False, True, False]),
    ({"reply_src": "192.168.77.2"}, [False, False, True, False]),
    ({"sport": 40000}, [True, False, False, False]),
])
def test_filters_match_as_conntrack(args: dict[str, Any], want: list[bool]) -> None:
    f = parse(args)
    assert [f.match(e) for e in (entry(), ICMP, FORWARD, ROUTED6)] == want


@pytest.mark.parametrize(("args", "where"), [
    ({"status": "DYING"}, "--status"), ({"zone": "lan"}, "--fw-zone"),
    ({"src": "300.1.2.3"}, "--src"), ({"mark": "x"}, "--mark"),
    ({"src_nat": "1.2.3.4:99999"}, "--src-nat"), ({"family": "ipx"}, "--family"),
    ({"state": "SLEEPING"}, "--state"), ({"dport": "http"}, "--dport"),
    # What a hostile client can put in JSON (the control fuzzer found the first).
    ({"zone": float("inf")}, "--zone"), ({"sport": float("nan")}, "--sport"),
    ({"dport": True}, "--dport"), ({"zone": [0]}, "--zone"), ({"sport": "9" * 40}, "--sport"),
])
def test_bad_filters_name_the_option(args: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError, match=where):
        parse(args)
