"""The text of `routerctl conntrack list` is the text of `conntrack -L`."""

from router.conntrack_text import Output, entry_json, entry_line
from router.datapath import ASSURED, SEEN_REPLY, SRC_NAT, CtEntry


def entry(**kw) -> CtEntry:  # type: ignore[no-untyped-def]
    base = dict(slot=3, family=4, proto=6, state="TIME_WAIT", status=SEEN_REPLY | ASSURED,
                src=("127.0.0.1", "127.0.0.1"), dst=("127.0.0.1", "127.0.0.1"),
                sport=(55238, 8080), dport=(8080, 55238), timeout_ms=118_200, age_ms=5000,
                packets=(6, 4), bytes=(400, 300))
    base.update(kw)
    return CtEntry(**base)  # type: ignore[arg-type]


def test_tcp_line() -> None:
    assert entry_line(entry_json(entry())) == (
        "tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=55238 dport=8080 "
        "packets=6 bytes=400 src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=55238 "
        "packets=4 bytes=300 [ASSURED] mark=0 use=1")


def test_udp_unreplied_with_snat() -> None:
    e = entry(proto=17, state=None, status=SRC_NAT, src=("127.0.0.1", "127.0.0.2"),
              dst=("127.0.0.2", "10.99.0.1"), sport=(43924, 5353), dport=(5353, 43924),
              timeout_ms=29_000, packets=(1, 0), bytes=(60, 0))
    assert entry_line(entry_json(e)) == (
        "udp      17 29 src=127.0.0.1 dst=127.0.0.2 sport=43924 dport=5353 packets=1 bytes=60 "
        "[UNREPLIED] src=127.0.0.2 dst=10.99.0.1 sport=5353 dport=43924 packets=0 bytes=0 "
        "mark=0 use=1")


def test_icmp_line() -> None:
    e = entry(proto=1, state=None, sport=(10653, 10653), dport=(0x0800, 0x0000),
              timeout_ms=29_000, status=SEEN_REPLY)
    assert entry_line(entry_json(e)).startswith(
        "icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=10653 packets=6 bytes=400 "
        "src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=10653 ")


def test_json_fields() -> None:
    j = entry_json(entry())
    assert j["proto"] == "tcp" and j["state"] == "TIME_WAIT" and j["assured"]
    assert j["original"] == {"src": "127.0.0.1", "dst": "127.0.0.1", "sport": 55238,
                             "dport": 8080, "packets": 6, "bytes": 400}
    assert j["timeout"] == 119 and j["age"] == 5


def test_nat_mappings_group_connections() -> None:
    from router.conntrack_text import mapping_line, nat_mappings
    from router.datapath import DST_NAT

    a = entry(proto=17, state=None, status=SRC_NAT | SEEN_REPLY,
              src=("192.168.1.2", "8.8.8.8"), dst=("8.8.8.8", "203.0.113.1"),
              sport=(5000, 53), dport=(53, 5000), age_ms=7000, timeout_ms=100_000)
    b = entry(proto=17, state=None, status=SRC_NAT, src=("192.168.1.2", "1.1.1.1"),
              dst=("1.1.1.1", "203.0.113.1"), sport=(5000, 53), dport=(53, 5000),
              age_ms=2000, timeout_ms=200_000)
    fwd = entry(status=DST_NAT | SEEN_REPLY, src=("198.51.100.9", "192.168.1.3"),
                dst=("203.0.113.1", "198.51.100.9"), sport=(40000, 80), dport=(8080, 40000))
    plain = entry(status=SEEN_REPLY)
    maps = nat_mappings([a, b, fwd, plain], "address-dependent")
    assert [(m["proto"], m["kind"], m["internal"], m["external"], m["connections"], m["age"],
             m["timeout"]) for m in maps] == [
        ("tcp", "forward", "192.168.1.3:80", "203.0.113.1:8080", 1, 5, 119),
        ("udp", "snat", "192.168.1.2:5000", "203.0.113.1:5000", 2, 7, 200)]
    assert mapping_line(maps[1]).startswith("udp   snat     192.168.1.2:5000")
    assert maps[1]["filtering"] == "address-dependent" and maps[0]["filtering"] == "forward"


def test_event_lines_like_conntrack_e() -> None:
    from router.conntrack_text import event_line
    base = {"proto": "tcp", "protonum": 6, "timeout": 120, "state": "SYN_SENT",
            "original": {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 43210, "dport": 22,
                         "packets": 1, "bytes": 60},
            "reply": {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 22, "dport": 43210,
                      "packets": 0, "bytes": 0},
            "unreplied": True, "assured": False}
    assert event_line({**base, "type": "NEW"}) == (
        "    [NEW] tcp      6 120 SYN_SENT src=10.0.0.2 dst=10.0.0.1 sport=43210 dport=22 "
        "[UNREPLIED] src=10.0.0.1 dst=10.0.0.2 sport=22 dport=43210")
    assert event_line({**base, "type": "UPDATE", "unreplied": False}).startswith(
        " [UPDATE] tcp      6 120 SYN_SENT src=")
    assert event_line({**base, "type": "DESTROY", "assured": True, "unreplied": False}) == (
        "[DESTROY] tcp      6 SYN_SENT src=10.0.0.2 dst=10.0.0.1 sport=43210 dport=22 packets=1 "
        "bytes=60 src=10.0.0.1 dst=10.0.0.2 sport=22 dport=43210 packets=0 bytes=0 [ASSURED]")
    # -o timestamp,extended,id, as conntrack prints them.
    opts = Output(extended=True, id=True, timestamp=True)
    line = event_line({**base, "type": "NEW", "family": "ipv4", "id": 7,
                       "time": 1764553200.012345}, opts)
    assert line == ("[1764553200.012345]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT "
                    "src=10.0.0.2 dst=10.0.0.1 sport=43210 dport=22 [UNREPLIED] src=10.0.0.1 "
                    "dst=10.0.0.2 sport=22 dport=43210 id=7")


def test_stats_line_like_conntrack_s() -> None:
    from router.conntrack_text import stats_line
    assert stats_line({"found": 3, "invalid": 1}) == (
        "cpu=0   \tfound=3 invalid=1 insert=0 insert_failed=0 drop=0 early_drop=0 error=0 "
        "search_restart=0 clash_resolve=0 chaintoolong=0 ")


def test_a_full_listener_counts_what_it_missed() -> None:
    import asyncio

    from router import events

    async def go() -> list[dict[str, object]]:
        li = events.Listener(frozenset(["NEW"]), lambda j: True)
        for i in range(events.QUEUE_MAX + 5):
            li.offer({"type": "NEW", "n": i})
        li.lose(3)  # lost in the data plane's ring too
        out = []
        async for m in li.messages():
            out.append(m)
            if len(out) == events.QUEUE_MAX + 1:
                break
        return out

    out = asyncio.run(go())
    assert out[0] == {"type": "MISSED", "count": 8}
    assert out[1]["n"] == 0 and out[-1]["n"] == events.QUEUE_MAX - 1


def test_icmpv6_line() -> None:
    e = entry(family=6, proto=58, state=None, status=SEEN_REPLY,
              src=("2001:db8:77::2", "2001:db8:113::10"),
              dst=("2001:db8:113::10", "2001:db8:77::2"),
              sport=(13738, 13738), dport=(0x8000, 0x8100), timeout_ms=59_500)
    assert entry_line(entry_json(e)) == (
        "icmpv6   58 60 src=2001:db8:77::2 dst=2001:db8:113::10 type=128 code=0 id=13738 "
        "packets=6 bytes=400 src=2001:db8:113::10 dst=2001:db8:77::2 type=129 code=0 id=13738 "
        "packets=4 bytes=300 mark=0 use=1")


def test_nat66_mappings_are_per_connection() -> None:
    from router.conntrack_text import nat_mappings

    e = entry(family=6, proto=58, state=None, status=SRC_NAT | SEEN_REPLY,
              src=("fd00:77::2", "2001:db8:113::10"),
              dst=("2001:db8:113::10", "2001:db8:113::1"),
              sport=(7, 1024), dport=(0x8000, 0x8100))
    (m,) = nat_mappings([e], "endpoint-independent")
    assert m["proto"] == "icmpv6" and m["kind"] == "snat"
    assert m["internal"] == "[fd00:77::2]:7"
    assert m["external"] == "[2001:db8:113::1]:1024"  # the identifier, as for ICMP
    assert m["filtering"] == "address-and-port-dependent"


def test_conntrack_filter_takes_any_spelling_of_an_address() -> None:
    import pytest

    from router.ctfilter import parse

    j = entry_json(entry(family=6, proto=17, state=None, src=("2001:db8:77::2", "2001:db8::9"),
                         dst=("2001:db8::9", "2001:db8:77::2")))
    assert parse({"src": "2001:DB8:77:0::2"}).match(j)
    assert parse({"src": "2001:db8:77::2", "dst": "2001:db8:0:0::9"}).match(j)
    assert not parse({"src": "2001:db8:77::3"}).match(j)
    with pytest.raises(ValueError, match="not an IP address"):
        parse({"src": "not-an-address"})
